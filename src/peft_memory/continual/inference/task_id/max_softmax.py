"""The most confident head, with every head in ONE forward (memory tokens' concatenation)."""

from __future__ import annotations

import torch

from ....task_identity import batch_majority
from ..evaluation import correct
from ..prediction import Prediction, hierarchical
from .base import TaskIdentityRule


class MaxSoftmax(TaskIdentityRule):
    """``argmax_t max_c softmax(logits_t(x))_c`` where one forward with every seen memory adapter taking part gives
    every head's logits (``task_logits``; Sandler et al. 2022, Sec. 2.2). Task-incremental: the true task's head.
    Needs a tuner with ``concatenated()`` (memory tokens)."""

    name = "max_softmax"

    @staticmethod
    def task_logits(ctx, batch) -> list[torch.Tensor]:
        """Every seen head's logits ``(batch, W_t)``, from one forward, on the CPU."""
        with torch.no_grad(), ctx.model.base_model.concatenated(ctx.names):
            per_task = ctx.model(**batch).task_logits
        return [per_task[n].float().cpu() for n in ctx.names]

    def prediction(self, ctx, logits: list[torch.Tensor]) -> Prediction:
        """The most confident head's task and class, every head's classes scored (ranked by confidence)."""
        confidence = torch.stack([lg.softmax(dim=-1).max(dim=-1).values for lg in logits], dim=-1)  # (batch, T)
        inferred = confidence.argmax(dim=-1)
        if not ctx.per_sample:
            inferred = batch_majority(inferred)
        probs = [lg.to(torch.float64).softmax(dim=-1) for lg in logits]
        return hierarchical(inferred, torch.ones_like(confidence, dtype=torch.float64), probs,
                            confidence.to(torch.float64), ctx.widths)

    def predict_batch(self, ctx, batch):
        return self.prediction(ctx, self.task_logits(ctx, batch))

    def evaluate_batch(self, ctx, batch, labels, k):
        logits = self.task_logits(ctx, batch)
        labels = labels.cpu()
        return {"til": logits[k].argmax(dim=-1) == labels, **correct(ctx.tasks, self.prediction(ctx, logits), labels, k)}
