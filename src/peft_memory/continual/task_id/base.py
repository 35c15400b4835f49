"""The task-identity rule interface: which task adapter handles each test sample."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..evaluation import EvalContext, routed_evaluation


class TaskIdentityRule:
    """A task-identity rule as the trainer uses it (``--task_id_mode``).

    A rule that picks one task per sample implements :meth:`infer`; the class-incremental prediction is then the
    inferred task's adapter among that task's classes (:func:`~peft_memory.continual.evaluation.routed_evaluation`).
    A rule that decides differently (all heads in one forward, say) overrides :meth:`evaluate_batch`.
    """

    #: the ``--task_id_mode`` value.
    name: ClassVar[str]

    def infer(self, ctx: EvalContext, batch: dict) -> torch.Tensor:
        """Task index into ``ctx.tasks`` for each sample of ``batch``: ``LongTensor`` ``(batch,)`` on the CPU. With
        ``ctx.per_sample=False`` every sample gets the batch's single decision (labelled BATCH-WISE)."""
        raise NotImplementedError

    def evaluate_batch(self, ctx: EvalContext, batch: dict, labels: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """Correctness of each sample of a test batch of ``ctx.tasks[k]``: bool ``til``, ``cil``, ``task_id``
        ``(batch,)``."""
        return routed_evaluation(ctx, batch, labels, k, self.infer)
