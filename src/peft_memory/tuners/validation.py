"""Config validation shared by peft_memory's method configs: each check raises ``ValueError`` naming the field and
the fix (fuzzed in ``tests/test_errors.py``)."""

from __future__ import annotations

import math


def is_int(value) -> bool:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def validate_layers(layers, name: str = "layers_to_transform", allow_none: bool = True) -> list[int] | None:
    """Check 0-based layer indices (a list, or one int) and return them as a list (``None`` stays ``None``).

    Raises:
        ValueError: for negative, non-integer or boolean entries, or another type, naming ``name``.
    """
    if layers is None and allow_none:
        return None
    values = [layers] if is_int(layers) else layers
    if not isinstance(values, (list, tuple)) or not all(is_int(i) and i >= 0 for i in values):
        raise ValueError(
            f"{name} must hold non-negative 0-based layer indices, got {layers!r}; "
            "e.g. [9, 10, 11] for the last three layers of a 12-layer model."
        )
    return list(values)


def check_layers_in_range(layers, num_layers: int, name: str = "layers_to_transform") -> None:
    """Raise ``ValueError`` if a 0-based index of ``layers`` (a list, one int or ``None``) is not below ``num_layers``.

    The message names ``name``, the bad indices and the valid range, e.g. ``layers_to_transform=[4] has indices [4]
    out of range: the model has 4 layers (valid: 0..3).``
    """
    values = [layers] if is_int(layers) else list(layers or [])
    bad = [i for i in values if i >= num_layers]
    if bad:
        raise ValueError(f"{name}={layers} has indices {bad} out of range: the model has {num_layers} layers "
                         f"(valid: 0..{num_layers - 1}).")


def validate_number(config, name: str, positive: bool = False, hint: str = "") -> None:
    """``getattr(config, name)`` must be a finite real number (``> 0`` if ``positive``)."""
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        kind = "a positive" if positive else "a finite"
        raise ValueError(f"{name} must be {kind} number, got {value!r}{'; ' + hint if hint else ''}.")


def validate_count(config, name: str, hint: str = "") -> None:
    """``getattr(config, name)`` must be a non-negative integer (booleans refused)."""
    value = getattr(config, name)
    if not is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}{'; ' + hint if hint else ''}.")


def validate_flag(config, name: str) -> None:
    """``getattr(config, name)`` must be ``True`` or ``False``."""
    if not isinstance(getattr(config, name), bool):
        raise ValueError(f"{name} must be True or False, got {getattr(config, name)!r}.")
