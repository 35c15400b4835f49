"""The methods the continual trainer can run, and the adapter config each builds for a task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from peft import PeftConfig

from ..tuners import DualPromptConfig, SoftMaskConfig
from ..tuners.prompts import PromptFields
from .tasks import Task

TASK_ID_MODES = ("gradient_id", "prompt_id", "max_logit")


@dataclass(frozen=True)
class MethodSpec:
    """How the trainer runs one method.

    Attributes:
        name: CLI name (``--method``).
        make_config: ``(task, args) -> PeftConfig`` for the task's adapter.
        task_id_mode: default task-identity inference (``gradient_id`` or ``max_logit``).
        joint: train one adapter on all tasks' data at once (the upper bound), not continually.
        auxiliary_loss: ``(peft_model, batch, adapter_name) -> scalar`` added to the cross-entropy of each step.
    """

    name: str
    make_config: Callable[[Task, object], PeftConfig]
    task_id_mode: str
    joint: bool = False
    auxiliary_loss: Callable | None = None


def matching_loss(model, batch: dict, adapter_name: str) -> torch.Tensor:
    """DualPrompt's pull constraint ``-lambda * mean cos(query, key_t)`` (Wang et al. 2022, Eq. 5); the query is
    the frozen model's feature (one extra forward without gradient, as in the paper)."""
    tuner = model.base_model
    weight = tuner.peft_config[adapter_name].matching_loss_weight
    features = tuner.frozen_features(model, batch)
    return -weight * tuner.key_similarity(features, [adapter_name])[:, 0].mean()


def _soft_mask(task: Task, args) -> SoftMaskConfig:
    return SoftMaskConfig(
        label_names=task.label_names,
        layers_to_transform=list(args.layers) if args.layers else None,
        mask_attention_output=args.mask_attention_output,
        mask_ffn=args.mask_ffn,
    )


def _prompt_fields(args) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(PromptFields)}


def _dual_prompt(task: Task, args) -> DualPromptConfig:
    return DualPromptConfig(label_names=task.label_names, **_prompt_fields(args))


def _soft_mask_prompts(task: Task, args) -> SoftMaskConfig:
    config = _soft_mask(task, args)
    for key, value in _prompt_fields(args).items():
        setattr(config, key, value)
    config.use_prompts = True
    config.validate_prompts()
    return config


def _head_only(task: Task, args) -> SoftMaskConfig:
    return SoftMaskConfig(label_names=task.label_names, target_modules=[])


METHODS: dict[str, MethodSpec] = {
    "soft_mask": MethodSpec("soft_mask", _soft_mask, "gradient_id"),
    "dual_prompt": MethodSpec("dual_prompt", _dual_prompt, "prompt_id", auxiliary_loss=matching_loss),
    "soft_mask_prompts": MethodSpec("soft_mask_prompts", _soft_mask_prompts, "prompt_id",
                                    auxiliary_loss=matching_loss),
    "head_only": MethodSpec("head_only", _head_only, "max_logit"),
    "joint": MethodSpec("joint", _soft_mask, "max_logit", joint=True),
}


def get_method(name: str) -> MethodSpec:
    """Look up a method by CLI name. Raises ``ValueError`` listing the known names."""
    if name not in METHODS:
        raise ValueError(f"--method {name!r} is unknown; choose one of {sorted(METHODS)}.")
    return METHODS[name]
