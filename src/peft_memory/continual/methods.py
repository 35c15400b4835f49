"""The methods the continual trainer can run, and the adapter config each builds for a task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from peft import LoraConfig, PeftConfig

from ..families import get_family, num_layers
from ..tuners import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig
from ..tuners.prompts import PromptFields
from .tasks import Task


@dataclass(frozen=True)
class MethodSpec:
    """How the trainer runs one method.

    Attributes:
        name: CLI name (``--method``).
        make_config: ``(task, args, base_model) -> PeftConfig`` for the task's adapter.
        task_id_mode: default task-identity inference (``gradient_id``, ``prompt_id``, ``max_logit`` or
            ``max_softmax``: the most confident head, all heads in one forward, memory tokens).
        joint: train one adapter on all tasks' data at once (the upper bound), not continually.
        auxiliary_loss: ``(peft_model, batch, adapter_name, keys=None, weight=None) -> scalar`` added to the
            cross-entropy of each step.
        task_keys: the adapters carry no Prompt-ID key: the trainer keeps a :class:`peft_memory.TaskKeys` beside
            them, trains each key with the matching loss and saves it in the adapter folder.
        task_id_modes: the task-identity modes the method supports.
    """

    name: str
    make_config: Callable[[Task, object, object], PeftConfig]
    task_id_mode: str
    joint: bool = False
    auxiliary_loss: Callable | None = None
    task_keys: bool = False
    task_id_modes: tuple[str, ...] = ("gradient_id", "prompt_id", "max_logit")

    def resolve_task_id_mode(self, mode: str | None) -> str:
        """``mode`` (or the method's default if ``None``); raises ``ValueError`` if it does not apply."""
        mode = mode or self.task_id_mode
        if mode not in self.task_id_modes:
            raise ValueError(f"--task_id_mode {mode} does not apply to --method {self.name}; choose one of "
                             f"{list(self.task_id_modes)}.")
        return mode


def matching_loss(model, batch: dict, adapter_name: str, keys=None, weight: float | None = None) -> torch.Tensor:
    """DualPrompt's pull constraint ``-lambda * mean cos(query, key_t)`` (Wang et al. 2022, Eq. 5); the query is
    the frozen model's feature (one extra forward without gradient, as in the paper). The key is the adapter's own
    (``lambda`` from its config), or ``keys[adapter_name]`` of a :class:`peft_memory.TaskKeys` (``lambda=weight``)."""
    source = model.base_model if keys is None else keys
    if weight is None:
        weight = model.base_model.peft_config[adapter_name].matching_loss_weight
    features = source.frozen_features(model, batch)
    return -weight * source.key_similarity(features, [adapter_name])[:, 0].mean()


def _soft_mask(task: Task, args, model=None) -> SoftMaskConfig:
    return SoftMaskConfig(
        label_names=task.label_names,
        layers_to_transform=list(args.layers) if args.layers else None,
        mask_attention_output=args.mask_attention_output,
        mask_ffn=args.mask_ffn,
    )


def _prompt_fields(args) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(PromptFields)}


def _dual_prompt(task: Task, args, model=None) -> DualPromptConfig:
    return DualPromptConfig(label_names=task.label_names, **_prompt_fields(args))


def _soft_mask_prompts(task: Task, args, model=None) -> SoftMaskConfig:
    config = _soft_mask(task, args)
    for key, value in _prompt_fields(args).items():
        setattr(config, key, value)
    config.use_prompts = True
    config.validate_prompts()
    return config


def _head_only(task: Task, args, model=None) -> SoftMaskConfig:
    return SoftMaskConfig(label_names=task.label_names, target_modules=[])


def _lora(task: Task, args, model) -> LoraConfig:
    """PEFT's own LoRA on the query and value projections of the masked layers (``--layers``, default the last
    three), with the task's copy of the classifier (``modules_to_save``): the base model's classifier is as wide as
    the largest task, and a task's logits are its first ``num_labels`` columns."""
    family = get_family(model)
    n = num_layers(model)
    layers = list(args.layers) if args.layers else list(range(max(0, n - 3), n))
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        target_modules=[family.query.rsplit(".", 1)[-1], family.value.rsplit(".", 1)[-1]],
        layers_to_transform=layers,
        layers_pattern=family.layers_pattern,
        modules_to_save=[family.classifier],
    )


def _memory_token(task: Task, args, model=None) -> MemoryTokenConfig:
    return MemoryTokenConfig(
        label_names=task.label_names,
        num_memory_tokens=args.num_memory_tokens,
        layers_to_transform=list(args.layers) if args.layers else None,
        memory_after_norm=args.memory_after_norm,
        attention=args.memory_attention,
    )


METHODS: dict[str, MethodSpec] = {
    "soft_mask": MethodSpec("soft_mask", _soft_mask, "gradient_id", task_id_modes=("gradient_id", "max_logit")),
    "dual_prompt": MethodSpec("dual_prompt", _dual_prompt, "prompt_id", auxiliary_loss=matching_loss),
    "soft_mask_prompts": MethodSpec("soft_mask_prompts", _soft_mask_prompts, "prompt_id",
                                    auxiliary_loss=matching_loss),
    "lora": MethodSpec("lora", _lora, "prompt_id", auxiliary_loss=matching_loss, task_keys=True,
                       task_id_modes=("prompt_id", "max_logit")),
    "memory_token": MethodSpec("memory_token", _memory_token, "max_softmax", task_id_modes=("max_softmax", "max_logit")),
    "head_only": MethodSpec("head_only", _head_only, "max_logit", task_id_modes=("max_logit", "gradient_id")),
    "joint": MethodSpec("joint", _soft_mask, "max_logit", joint=True),
}


def get_method(name: str) -> MethodSpec:
    """Look up a method by CLI name. Raises ``ValueError`` listing the known names."""
    if name not in METHODS:
        raise ValueError(f"--method {name!r} is unknown; choose one of {sorted(METHODS)}.")
    return METHODS[name]
