"""Gradient-ID (SupSup's one-shot entropy gradient, as Soft-TransFormers uses it): :func:`peft_memory.gradient_id`."""

from __future__ import annotations

from ....task_identity import gradient_id
from .base import TaskIdentityRule


class GradientID(TaskIdentityRule):
    """Superpose the adapters with ``alpha_t = 1/T`` and pick ``argmax_t -dH/d alpha_t`` (Wortsman et al. 2020,
    Sec. 3.3; Kang et al., Sec. 4). Needs superposable adapters (soft masks, prompts)."""

    name = "gradient_id"

    def infer(self, ctx, batch):
        return gradient_id(ctx.model, batch, ctx.names, per_sample=ctx.per_sample, num_shots=ctx.num_shots)
