"""The continual trainer's methods (``--method``): one file per method, registered here by name."""

from __future__ import annotations

from .base import ContinualMethod
from .dual_prompt import DualPrompt, SoftMaskPrompts
from .joint import Joint, JointFull
from .lora import Lora
from .memory_token import MemoryToken
from .soft_mask import HeadOnly, SoftMask
from .training_free import RanPAC, SimpleCIL

#: ``--method`` name -> method class. A new method: one file in this package and one line here.
METHODS: dict[str, type[ContinualMethod]] = {
    m.name: m for m in (SoftMask, DualPrompt, SoftMaskPrompts, Lora, MemoryToken, HeadOnly, SimpleCIL, RanPAC, Joint,
                        JointFull)
}


def get_method(name: str) -> type[ContinualMethod]:
    """The method class called ``name`` (instantiate it with the run's arguments). Raises ``ValueError`` listing
    the known names."""
    if name not in METHODS:
        raise ValueError(f"--method {name!r} is unknown; choose one of {sorted(METHODS)}.")
    return METHODS[name]


__all__ = ["METHODS", "ContinualMethod", "get_method"]
