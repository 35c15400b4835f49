"""peft_memory tuners: one package per method (``config.py``, ``layer.py``, ``model.py``), as in PEFT."""

from .dual_prompt import DualPromptConfig, DualPromptModel
from .memory_token import MemoryTokenConfig, MemoryTokenModel
from .soft_mask import SoftMaskConfig, SoftMaskModel

__all__ = ["DualPromptConfig", "DualPromptModel", "MemoryTokenConfig", "MemoryTokenModel", "SoftMaskConfig",
           "SoftMaskModel"]
