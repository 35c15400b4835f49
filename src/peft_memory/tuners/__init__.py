"""peft_memory tuners: one package per method (``config.py``, ``layer.py``, ``model.py``), as in PEFT."""

from .soft_mask import SoftMaskConfig, SoftMaskModel

__all__ = ["SoftMaskConfig", "SoftMaskModel"]
