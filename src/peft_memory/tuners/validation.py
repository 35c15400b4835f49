"""Config validation shared by peft_memory's method configs."""

from __future__ import annotations


def validate_head_fields(config) -> None:
    """Check ``num_labels``/``label_names`` and fill one from the other. Shared by all peft_memory configs."""
    if config.label_names is not None:
        config.label_names = [str(n) for n in config.label_names]
        if config.num_labels is None:
            config.num_labels = len(config.label_names)
        elif len(config.label_names) != config.num_labels:
            raise ValueError(
                f"label_names has {len(config.label_names)} entries but num_labels={config.num_labels}; "
                "pass one name per class or leave num_labels unset."
            )
    if config.num_labels is not None and (not isinstance(config.num_labels, int) or config.num_labels < 1):
        raise ValueError(f"num_labels must be a positive integer, got {config.num_labels!r}.")


def validate_layers(layers) -> None:
    """Reject negative or non-integer ``layers_to_transform`` entries with the fix."""
    values = [layers] if isinstance(layers, int) else (layers or [])
    for i in values:
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise ValueError(
                f"layers_to_transform must hold non-negative 0-based layer indices, got {layers!r}; "
                "e.g. [9, 10, 11] for the last three layers of a 12-layer model."
            )
