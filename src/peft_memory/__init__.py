"""peft_memory: continual learning for Hugging Face ViT and BERT models as PEFT methods.

``import peft_memory`` registers the peft types ``SOFT_MASK``, ``MEMORY_TOKEN`` and ``DUAL_PROMPT`` with PEFT, so
``peft.get_peft_model``, ``PeftModel.from_pretrained`` and friends accept our configs. Import it before loading a
saved adapter: PEFT has no plugin discovery and fails with ``KeyError: 'SOFT_MASK'`` otherwise. It also gives
``PeftModel.save_pretrained`` / ``push_to_hub`` a model card of our adapters (:mod:`peft_memory.model_card`).
"""

import importlib

from . import model_card
from .pooling import set_head_pooling
from .registry import PeftMemoryType, register_method
from .task_identity import gradient_id, prompt_id
from .task_keys import TaskKeys, frozen_query
from .tuners import (
    DualPromptConfig,
    DualPromptModel,
    MemoryTokenConfig,
    MemoryTokenModel,
    SoftMaskConfig,
    SoftMaskModel,
)
from .version import __version__

register_method(PeftMemoryType.SOFT_MASK, SoftMaskConfig, SoftMaskModel)
register_method(PeftMemoryType.DUAL_PROMPT, DualPromptConfig, DualPromptModel)
register_method(PeftMemoryType.MEMORY_TOKEN, MemoryTokenConfig, MemoryTokenModel)
model_card.install()  # peft_memory's model card in PeftModel.save_pretrained / push_to_hub (peft_memory/model_card.py)

def __getattr__(name: str):
    """``peft_memory.ContinualClassifier``: imported on first use (the continual protocol loads datasets and
    accelerate, which the PEFT methods alone do not need)."""
    if name == "ContinualClassifier":  # by name: the tuners below never depend on the continual protocol
        return importlib.import_module(".continual.run.predictor", __name__).ContinualClassifier
    raise AttributeError(f"module 'peft_memory' has no attribute {name!r}")


__all__ = ["ContinualClassifier", "DualPromptConfig", "DualPromptModel", "MemoryTokenConfig", "MemoryTokenModel", "PeftMemoryType", "SoftMaskConfig", "SoftMaskModel", "TaskKeys",
           "frozen_query", "gradient_id", "prompt_id", "set_head_pooling", "__version__"]
