"""The methods the continual trainer can run, and the adapter config each builds for a task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peft import PeftConfig

from ..tuners import SoftMaskConfig
from .tasks import Task

TASK_ID_MODES = ("gradient_id", "max_logit")


@dataclass(frozen=True)
class MethodSpec:
    """How the trainer runs one method.

    Attributes:
        name: CLI name (``--method``).
        make_config: ``(task, args) -> PeftConfig`` for the task's adapter.
        task_id_mode: default task-identity inference (``gradient_id`` or ``max_logit``).
        joint: train one adapter on all tasks' data at once (the upper bound), not continually.
    """

    name: str
    make_config: Callable[[Task, object], PeftConfig]
    task_id_mode: str
    joint: bool = False


def _soft_mask(task: Task, args) -> SoftMaskConfig:
    return SoftMaskConfig(
        label_names=task.label_names,
        layers_to_transform=list(args.layers) if args.layers else None,
        mask_attention_output=args.mask_attention_output,
        mask_ffn=args.mask_ffn,
    )


def _head_only(task: Task, args) -> SoftMaskConfig:
    return SoftMaskConfig(label_names=task.label_names, target_modules=[])


METHODS: dict[str, MethodSpec] = {
    "soft_mask": MethodSpec("soft_mask", _soft_mask, "gradient_id"),
    "head_only": MethodSpec("head_only", _head_only, "max_logit"),
    "joint": MethodSpec("joint", _soft_mask, "max_logit", joint=True),
}


def get_method(name: str) -> MethodSpec:
    """Look up a method by CLI name. Raises ``ValueError`` listing the known names."""
    if name not in METHODS:
        raise ValueError(f"--method {name!r} is unknown; choose one of {sorted(METHODS)}.")
    return METHODS[name]
