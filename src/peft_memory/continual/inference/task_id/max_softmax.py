"""The most confident head, with every head in ONE forward (memory tokens' concatenation)."""

from __future__ import annotations

import torch

from ....task_identity import batch_majority
from ..evaluation import global_labels
from .base import TaskIdentityRule


class MaxSoftmax(TaskIdentityRule):
    """``argmax_t max_c softmax(logits_t(x))_c`` where one forward with every seen memory adapter taking part gives
    every head's logits (``task_logits``; Sandler et al. 2022, Sec. 2.2). Task-incremental: the true task's head.
    Needs a tuner with ``concatenated()`` (memory tokens)."""

    name = "max_softmax"

    def evaluate_batch(self, ctx, batch, labels, k):
        tasks, names = ctx.tasks, ctx.names
        with torch.no_grad(), ctx.model.base_model.concatenated(names):
            per_task = ctx.model(**batch).task_logits
        logits = [per_task[n].float().cpu() for n in names]
        confidence = torch.stack([lg.softmax(dim=-1).max(dim=-1).values for lg in logits], dim=-1)  # (batch, T)
        inferred = confidence.argmax(dim=-1)
        if not ctx.per_sample:
            inferred = batch_majority(inferred)
        labels = labels.cpu()
        til_pred = logits[k].argmax(dim=-1)
        pred_local = torch.stack([lg.argmax(dim=-1) for lg in logits], dim=-1).gather(1, inferred[:, None])[:, 0]
        true_global = global_labels(tasks, torch.full_like(labels, k), labels)
        return {"til": til_pred == labels, "cil": global_labels(tasks, inferred, pred_local) == true_global,
                "task_id": inferred == k}
