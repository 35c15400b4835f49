"""Max-logit: the task whose head gives the largest logit."""

from __future__ import annotations

import torch

from ....task_identity import batch_majority
from .base import TaskIdentityRule


class MaxLogit(TaskIdentityRule):
    """``argmax_t max_c logits_t(x)_c``, one forward per seen task. For heads over a frozen backbone this is the
    argmax of the concatenated classifier (the head-only baseline)."""

    name = "max_logit"

    def infer(self, ctx, batch):
        n = next(iter(batch.values())).shape[0]
        scores = torch.stack([ctx.forward(batch, [name] * n)[0][:, :width].max(dim=-1).values
                              for name, width in zip(ctx.names, ctx.widths)], dim=-1)
        task = scores.argmax(dim=-1)
        return task if ctx.per_sample else batch_majority(task)
