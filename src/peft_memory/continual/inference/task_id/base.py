"""The task-identity rule interface: which task adapter handles each test sample."""

from __future__ import annotations

from typing import ClassVar

import torch

from ....class_statistics import STATISTICS_FILE
from ....task_identity import batch_majority
from ..evaluation import EvalContext, evaluate_with
from ..prediction import Prediction, predict_with


class TaskIdentityRule:
    """A task-identity rule as the trainer uses it (``--task_id_mode``).

    A rule that picks one task per sample implements :meth:`infer`; the class-incremental prediction then follows
    ``--cil_rule`` (:func:`~peft_memory.continual.inference.evaluation.evaluate_with`: the inferred task's adapter among that
    task's classes, or among every seen class).
    A rule that decides differently (all heads in one forward, say) overrides :meth:`predict_batch` and
    :meth:`evaluate_batch`.
    """

    #: the ``--task_id_mode`` value.
    name: ClassVar[str]

    def infer(self, ctx: EvalContext, batch: dict) -> torch.Tensor:
        """Task index into ``ctx.tasks`` for each sample of ``batch``: ``LongTensor`` ``(batch,)`` on the CPU. With
        ``ctx.per_sample=False`` every sample gets the batch's single decision (labelled BATCH-WISE)."""
        raise NotImplementedError

    def predict_batch(self, ctx: EvalContext, batch: dict) -> Prediction:
        """The class-incremental :class:`~..prediction.Prediction` of ``batch`` (``--cil_rule`` after
        :meth:`infer`)."""
        return predict_with(ctx, batch, self.infer)

    def evaluate_batch(self, ctx: EvalContext, batch: dict, labels: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """Correctness of each sample of a test batch of ``ctx.tasks[k]``: bool ``til``, ``cil``, ``task_id``
        ``(batch,)``."""
        return evaluate_with(ctx, batch, labels, k, self.infer)


class ClassStatisticsRule(TaskIdentityRule):
    """A rule that reads the class statistics saved with every adapter: per sample, the class with the best score
    over all seen classes gives the task. The query is the frozen model's feature of Prompt-ID (one forward with
    the adapters disabled, computed once per batch), so the cost is a Prompt-ID pass; with
    ``--first_session_adaptation`` a second forward through the first task's adapter joins it. Subclasses build the
    classifier (``labels`` and ``scores(features) -> (batch, C)``) in :meth:`classifier`; :meth:`features` maps the
    query into the statistics' space (``filename``)."""

    filename: ClassVar[str] = STATISTICS_FILE

    def classifier(self, stats):
        raise NotImplementedError

    def features(self, ctx: EvalContext, query: torch.Tensor) -> torch.Tensor:
        return query

    def class_scores(self, ctx: EvalContext, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(scores (batch, C), task of each class (C,), global id of each class (C,))`` over every seen class.

        Raises:
            ValueError: if the seen adapters carry no class statistics.
        """
        if self.filename not in ctx.statistics:
            raise ValueError(f"--task_id_mode {self.name} reads the class statistics saved with each adapter "
                             f"({self.filename}); these adapters have none: retrain them with peft-memory train.")
        classifier = ctx.cached(self.name, lambda: self.classifier(ctx.statistics[self.filename]))
        owners = ctx.cached("class_tasks", lambda: ctx.class_tasks(classifier.labels))
        query = ctx.query(batch)
        return classifier.scores(self.features(ctx, query)).cpu(), owners, classifier.labels

    def infer(self, ctx, batch):
        scores, owners, _ = self.class_scores(ctx, batch)
        task = owners[scores.argmax(dim=-1)]
        return task if ctx.per_sample else batch_majority(task)
