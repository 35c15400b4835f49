"""The Gaussian classifier (shared covariance, shrinkage chosen on held-out training data) as a task-identity rule."""

from __future__ import annotations

import torch

from ...class_statistics import GaussianClassifier
from .base import ClassStatisticsRule


class GaussianRule(ClassStatisticsRule):
    """The task of the class with the largest Gaussian discriminant score over every seen class (HiDe-Prompt's
    task-identity inference from class statistics, Wang et al. NeurIPS 2023). The shrinkage is the one the adapters'
    held-out training samples prefer (``Validation.best``). Its class posterior, summed per task, is the task
    posterior that ``--cil_rule combined`` re-scores."""

    name = "gaussian"

    def classifier(self, stats):
        return GaussianClassifier(stats, stats.validation["shrinkage"].best() if "shrinkage" in stats.validation
                                  else 0.1)

    def task_log_posterior(self, ctx, batch) -> torch.Tensor:
        """``log p(t | x)`` ``(batch, T)`` over the seen tasks ``ctx.tasks``."""
        scores, owners, _ = self.class_scores(ctx, batch)
        return task_log_posterior(scores, owners, len(ctx.tasks))


def task_log_posterior(scores: torch.Tensor, owners: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """``log p(t | x)`` ``(batch, num_tasks)``: the class posterior ``softmax(scores)`` ``(batch, C)`` summed over each
    task's classes (``owners`` ``(C,)``: the task of each class)."""
    log_p = scores.log_softmax(dim=-1)
    return torch.stack([log_p[:, owners == t].logsumexp(dim=-1) for t in range(num_tasks)], dim=-1)
