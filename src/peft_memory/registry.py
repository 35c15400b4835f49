"""Registration of peft_memory's methods with PEFT.

PEFT dispatches every call (``get_peft_model``, ``PeftModel.from_pretrained``, ``load_adapter``, ...) through four
dicts in ``peft.mapping`` keyed by ``peft_type``. ``peft.utils.register_peft_method`` only accepts members of PEFT's
closed ``PeftType`` enum, so this module writes our own ``str`` enum members into those dicts instead
(docs/design.md, "Registration"). ``import peft_memory`` does it once; a process that loads a saved adapter without
importing ``peft_memory`` first fails inside PEFT with ``KeyError: 'SOFT_MASK'``.
"""

from __future__ import annotations

import enum

from peft import mapping as _peft_mapping


class PeftMemoryType(str, enum.Enum):
    """PEFT types added by peft_memory. Compares and hashes equal to its string value, like ``peft.PeftType``."""

    SOFT_MASK = "SOFT_MASK"
    MEMORY_TOKEN = "MEMORY_TOKEN"
    DUAL_PROMPT = "DUAL_PROMPT"

    def __str__(self) -> str:  # so f-strings and json print "SOFT_MASK", as PeftType does
        return self.value


#: The PEFT mappings we write into. Each is guarded by ``tests/test_peft_internals.py``.
PEFT_MAPPINGS = (
    "PEFT_TYPE_TO_CONFIG_MAPPING",
    "PEFT_TYPE_TO_TUNER_MAPPING",
    "PEFT_TYPE_TO_MIXED_MODEL_MAPPING",
    "PEFT_TYPE_TO_PREFIX_MAPPING",
)


def register_method(peft_type: PeftMemoryType, config_cls: type, tuner_cls: type) -> None:
    """Make ``peft_type`` known to PEFT: its config class, tuner class and state-dict prefix.

    Args:
        peft_type: the member of :class:`PeftMemoryType` to register.
        config_cls: the ``PeftConfig`` subclass whose ``__post_init__`` sets ``peft_type``.
        tuner_cls: the ``BaseTuner`` subclass; its ``prefix`` must end with ``"_"``.

    Raises:
        ValueError: if ``tuner_cls.prefix`` does not end with ``"_"`` (PEFT's convention for prefixes).
    """
    prefix = tuner_cls.prefix
    if not prefix.endswith("_"):
        raise ValueError(f"tuner prefix {prefix!r} must end with '_' (PEFT convention); rename `prefix`.")
    _peft_mapping.PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = config_cls
    _peft_mapping.PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = tuner_cls
    _peft_mapping.PEFT_TYPE_TO_MIXED_MODEL_MAPPING[peft_type] = tuner_cls
    _peft_mapping.PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = prefix
