"""DualPrompt (Wang et al., ECCV 2022) and DualPrompt-Soft-TF (prompts plus soft masks), with the matching loss."""

from __future__ import annotations

from dataclasses import fields

import torch

from ...tuners import DualPromptConfig
from ...tuners.prompts import PromptFields
from .base import ContinualMethod
from .soft_mask import SoftMask


def matching_loss(keys, model, batch: dict, adapter_name: str, weight: float) -> torch.Tensor:
    """DualPrompt's pull constraint ``-lambda * mean cos(query, key_t)`` (Wang et al. 2022, Eq. 5); the query is the
    frozen model's feature (one extra forward without gradient, as in the paper).

    Args:
        keys: the key source: a prompt tuner (``model.base_model``) or a :class:`peft_memory.TaskKeys`.
        model: the ``PeftModel``; batch: the model inputs; adapter_name: the task whose key is pulled.
        weight: ``lambda``.
    """
    features = keys.frozen_features(model, batch)
    return -weight * keys.key_similarity(features, [adapter_name])[:, 0].mean()


def prompt_fields(args) -> dict:
    """The prompt settings (:class:`PromptFields`) of the run's arguments."""
    return {f.name: getattr(args, f.name) for f in fields(PromptFields)}


class PromptMatching:
    """Mixin: adapters with their own key (DualPrompt's); the matching loss pulls the task's key to the query."""

    task_id_modes = ("prompt_id", "gradient_id", "max_logit", "nearest_mean", "gaussian")
    cil_rules = ("unified", "routed", "combined", "product")  # DualPrompt's own classifier: every seen class (Sec. 4.3)

    def auxiliary_loss(self, model, batch, task):
        weight = model.base_model.peft_config[task.name].matching_loss_weight
        return matching_loss(model.base_model, model, batch, task.name, weight)


class DualPrompt(PromptMatching, ContinualMethod):
    """G- and E-prompts by prefix tuning and a key per task; per-sample Prompt-ID by default."""

    name = "dual_prompt"

    def make_config(self, task, base_model):
        return DualPromptConfig(label_names=task.label_names, **prompt_fields(self.args))


class SoftMaskPrompts(PromptMatching, SoftMask):
    """DualPrompt-Soft-TF: the soft masks of ``soft_mask`` plus DualPrompt's prompts and key in each adapter."""

    name = "soft_mask_prompts"

    def make_config(self, task, base_model):
        config = super().make_config(task, base_model)
        for key, value in prompt_fields(self.args).items():
            setattr(config, key, value)
        config.use_prompts = True
        config.validate_prompts()
        return config
