"""The Gaussian classifier (shared covariance, shrinkage chosen on held-out training data) as a task-identity rule."""

from __future__ import annotations

import torch

from ....class_statistics import GaussianClassifier
from .base import ClassStatisticsRule


class GaussianRule(ClassStatisticsRule):
    """The task of the class with the largest Gaussian discriminant score over every seen class (HiDe-Prompt's
    task-identity inference from class statistics, Wang et al. NeurIPS 2023). The shrinkage is the one the adapters'
    held-out training samples prefer (``Validation.best``). Its class posterior, summed per task, is the task
    posterior that ``--cil_rule combined`` re-scores; ``--cil_rule product`` also reads its class scores within the
    chosen task."""

    name = "gaussian"

    def classifier(self, stats):
        return GaussianClassifier(stats, stats.validation["shrinkage"].best() if "shrinkage" in stats.validation
                                  else 0.1)

    def task_log_posterior(self, ctx, batch) -> torch.Tensor:
        """``log p(t | x)`` ``(batch, T)`` over the seen tasks ``ctx.tasks``."""
        scores, owners, _ = self.class_scores(ctx, batch)
        return task_log_posterior(scores, owners, len(ctx.tasks))

    def posterior_and_class_scores(self, ctx, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``log p(t | x)`` ``(batch, T)`` and the discriminant score of each task's classes in the task's label
        order, ``(batch, T, W)`` (``W`` the widest task, ``-inf`` beyond a task's classes): one query forward."""
        scores, owners, labels = self.class_scores(ctx, batch)
        columns, valid = ctx.cached("task_columns", lambda: task_columns(ctx.tasks, labels))
        within = scores[:, columns].masked_fill(~valid, float("-inf"))
        return task_log_posterior(scores, owners, len(ctx.tasks)), within


def task_log_posterior(scores: torch.Tensor, owners: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """``log p(t | x)`` ``(batch, num_tasks)``: the class posterior ``softmax(scores)`` ``(batch, C)`` summed over each
    task's classes (``owners`` ``(C,)``: the task of each class)."""
    log_p = scores.log_softmax(dim=-1)
    index, valid = task_groups(owners, num_tasks)
    grouped = log_p[:, index.to(log_p.device)].masked_fill(~valid.to(log_p.device), float("-inf"))  # (batch, T, W)
    return grouped.logsumexp(dim=-1)


def task_groups(owners: torch.Tensor, num_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns of each task's classes, in column order, padded to the largest task: ``(T, W)`` indices into
    ``owners`` ``(C,)`` and ``(T, W)`` validity. One gather then gives every task's classes at once, in ``O(C)``
    (a loop over the tasks, each comparing all ``C`` owners, grew with ``T x C``)."""
    owners = owners.cpu()
    order = torch.argsort(owners, stable=True)  # columns grouped by task, each group in column order
    counts = torch.bincount(owners, minlength=num_tasks)
    width = max(int(counts.max()), 1) if len(counts) else 1
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(owners)) - starts[owners[order]]  # place of each column within its task
    index = torch.zeros(num_tasks, width, dtype=torch.long)
    valid = torch.zeros(num_tasks, width, dtype=torch.bool)
    index[owners[order], slot] = order
    valid[owners[order], slot] = True
    return index, valid


def task_columns(tasks, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column of ``labels`` ``(C,)`` (global class ids) holding each task's local class ``c``: ``(T, W)`` indices
    and ``(T, W)`` validity (``False`` beyond a task's classes; their index is 0)."""
    where = {int(c): i for i, c in enumerate(labels)}
    width = max(t.num_labels for t in tasks)
    columns = torch.zeros(len(tasks), width, dtype=torch.long)
    valid = torch.zeros(len(tasks), width, dtype=torch.bool)
    for t, task in enumerate(tasks):
        columns[t, : task.num_labels] = torch.tensor([where[c] for c in task.global_labels])
        valid[t, : task.num_labels] = True
    return columns, valid
