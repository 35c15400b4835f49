"""DualPrompt (Wang et al., ECCV 2022) and DualPrompt-Soft-TF (prompts plus soft masks), with the matching loss."""

from __future__ import annotations

from dataclasses import fields

from ...task_keys import matching_loss
from ...tuners import DualPromptConfig
from ...tuners.prompts import PromptFields
from ..inference.declaration import Inference
from .base import ContinualMethod
from .soft_mask import TASK_HEAD_ADAPTERS, SoftMask


def prompt_fields(args) -> dict:
    """The prompt settings (:class:`PromptFields`) of the run's arguments."""
    return {f.name: getattr(args, f.name) for f in fields(PromptFields)}


class PromptMatching:
    """Mixin: adapters with their own key (DualPrompt's); the matching loss pulls the task's key to the query.
    Paper recipe: Prompt-ID, then DualPrompt's classifier over every seen class (Wang et al. 2022, Sec. 4.3)."""

    provides = TASK_HEAD_ADAPTERS | {"superposable", "keys", "adapts_backbone"}
    recipes = {"recommended": Inference("gaussian", "product"), "paper": Inference("prompt_id", "unified")}

    def auxiliary_loss(self, model, batch, task):
        keys = model.base_model  # the prompt tuner holds each task's key
        weight = keys.peft_config[task.name].matching_loss_weight
        return matching_loss(keys, keys.frozen_features(model, batch), task.name, weight)


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
