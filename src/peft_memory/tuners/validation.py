"""Config validation shared by peft_memory's method configs: each check raises ``ValueError`` naming the field and
the fix (fuzzed in ``tests/test_errors.py``)."""

from __future__ import annotations

import math


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_head_fields(config) -> None:
    """Check ``num_labels``/``label_names`` and fill one from the other. Shared by all peft_memory configs."""
    if config.label_names is not None:
        if not isinstance(config.label_names, (list, tuple)) or not config.label_names:
            raise ValueError(f"label_names must be a non-empty list of class names, got {config.label_names!r}.")
        config.label_names = [str(n) for n in config.label_names]
        if config.num_labels is None:
            config.num_labels = len(config.label_names)
        elif len(config.label_names) != config.num_labels:
            raise ValueError(
                f"label_names has {len(config.label_names)} entries but num_labels={config.num_labels}; "
                "pass one name per class or leave num_labels unset."
            )
    if config.num_labels is not None and (not _is_int(config.num_labels) or config.num_labels < 1):
        raise ValueError(f"num_labels must be a positive integer, got {config.num_labels!r}.")


def validate_layers(layers, name: str = "layers_to_transform", allow_none: bool = True) -> list[int] | None:
    """Check 0-based layer indices (a list, or one int) and return them as a list (``None`` stays ``None``).

    Raises:
        ValueError: for negative, non-integer or boolean entries, or another type, naming ``name``.
    """
    if layers is None and allow_none:
        return None
    values = [layers] if _is_int(layers) else layers
    if not isinstance(values, (list, tuple)) or not all(_is_int(i) and i >= 0 for i in values):
        raise ValueError(
            f"{name} must hold non-negative 0-based layer indices, got {layers!r}; "
            "e.g. [9, 10, 11] for the last three layers of a 12-layer model."
        )
    return list(values)


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
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}{'; ' + hint if hint else ''}.")


def validate_flag(config, name: str) -> None:
    """``getattr(config, name)`` must be ``True`` or ``False``."""
    if not isinstance(getattr(config, name), bool):
        raise ValueError(f"{name} must be True or False, got {getattr(config, name)!r}.")
