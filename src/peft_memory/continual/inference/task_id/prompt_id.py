"""Prompt-ID (DualPrompt's key matching): :func:`peft_memory.prompt_id`."""

from __future__ import annotations

from ....task_identity import prompt_id
from .base import TaskIdentityRule


class PromptID(TaskIdentityRule):
    """The adapter whose key is closest (cosine) to the frozen model's query feature (Wang et al. 2022, Sec. 4.3).
    The keys are the adapters' own, or those the method keeps beside them (``method.prompt_keys()``)."""

    name = "prompt_id"

    def infer(self, ctx, batch):
        return prompt_id(ctx.model, batch, ctx.names, per_sample=ctx.per_sample, keys=ctx.method.prompt_keys())
