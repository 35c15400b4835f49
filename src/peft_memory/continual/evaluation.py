"""Evaluation of one test batch after training task ``j``: task-incremental accuracy (task given),
class-incremental accuracy (task inferred) and task-identity accuracy.

:class:`EvalContext` names what an evaluation reads (the model, the adapters seen so far, the method and its
task-identity rule); :func:`routed_evaluation` is the class-incremental rule shared by every task-identity rule that
picks one task per sample: the sample goes to the inferred task's adapter, which predicts among that task's classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tasks import Task


@dataclass
class EvalContext:
    """What the evaluation of a test batch reads.

    Attributes:
        model: the ``PeftModel`` with every adapter of ``tasks`` loaded.
        tasks: the tasks whose adapters are candidates, in training order (index = task id).
        evaluated: the sequence's tasks whose test sets are evaluated (``k`` of a test batch indexes it); the same
            list as ``tasks`` for every continual method, the sequence's tasks for joint training.
        method: the run's :class:`~peft_memory.continual.methods.ContinualMethod` (its Prompt-ID keys, if any).
        rule: the task-identity rule.
        per_sample: one task per sample (default); ``False``: one per test batch (labelled BATCH-WISE).
        num_shots: batch-wise Gradient-ID: the samples of the batch used (reference code: 7).
    """

    model: object
    tasks: list[Task]
    evaluated: list[Task]
    method: object
    rule: object
    per_sample: bool = True
    num_shots: int | None = None

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def widths(self) -> list[int]:
        """Each task's number of classes: its logits are the first ``widths[t]`` columns of the model's output."""
        return [t.num_labels for t in self.tasks]


def global_labels(tasks: list[Task], task_index: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Global class ids ``(batch,)`` of local labels ``local`` of the tasks ``task_index`` (both ``(batch,)``)."""
    return torch.tensor([tasks[t].global_labels[c] for t, c in zip(task_index.tolist(), local.tolist())])


def routed_evaluation(ctx: EvalContext, batch: dict, labels: torch.Tensor, k: int,
                      infer) -> dict[str, torch.Tensor]:
    """Per-sample correctness on one test batch of task ``k``: ``til`` (the true task's adapter), ``task_id``
    (``infer(ctx, batch)`` gives the task per sample, ``(batch,)``) and ``cil`` (the inferred task's adapter, among
    its own classes). Only samples routed to another task need a second forward.

    Returns bool tensors ``til``, ``cil``, ``task_id`` of shape ``(batch,)``.
    """
    model, tasks, names, widths = ctx.model, ctx.tasks, ctx.names, ctx.widths
    labels = labels.cpu()
    task = tasks[k]
    n = labels.shape[0]
    with torch.no_grad():
        logits = model(**batch, adapter_names=[task.name] * n).logits[:, : task.num_labels]
    til_pred = logits.argmax(dim=-1).cpu()
    inferred = infer(ctx, batch)
    pred_local = til_pred.clone()
    wrong = inferred != k
    if wrong.any():
        idx = wrong.nonzero().squeeze(1)
        sub = {key: v[idx.to(v.device)] for key, v in batch.items()}
        with torch.no_grad():
            other = model(**sub, adapter_names=[names[t] for t in inferred[idx].tolist()]).logits.cpu()
        beyond = torch.arange(other.shape[-1]) >= torch.tensor(widths)[inferred[idx]].unsqueeze(1)
        pred_local[idx] = other.masked_fill(beyond, float("-inf")).argmax(dim=-1)  # within each row's task
    true_global = global_labels(tasks, torch.full_like(labels, k), labels)
    cil = global_labels(tasks, inferred, pred_local) == true_global
    return {"til": til_pred == labels, "cil": cil, "task_id": inferred == k}
