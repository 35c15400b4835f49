"""Evaluation of one test batch after training task ``j``: task-incremental accuracy (task given),
class-incremental accuracy (task inferred) and task-identity accuracy.

:class:`EvalContext` names what an evaluation reads (the model, the adapters seen so far, the method and its
task-identity rule); :func:`evaluate_with` scores the class-incremental prediction (:mod:`.prediction`) of every rule
that picks one task per sample, by ``--cil_rule``: routed (the inferred task's adapter, among that task's classes),
unified (DualPrompt's classifier over every seen class), combined or product (:mod:`.combined`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ..data.tasks import Task
from .metrics import prediction_metrics
from .outputs import OutputCache, routed_outputs
from .prediction import Prediction, predict_with
from .prefix import SharedPrefix
from .statistics import statistics_query


def class_owners(tasks: list[Task], labels: torch.Tensor) -> torch.Tensor:
    """Task index (into ``tasks``) of each global class id of ``labels`` ``(C,)``; a class of several tasks (a shared
    label space) belongs to the first."""
    owner = {}
    for t, task in enumerate(tasks):
        for c in task.global_labels:
            owner.setdefault(c, t)
    return torch.tensor([owner[int(c)] for c in labels])


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
        statistics: ``{file name: ClassStatistics}`` of the seen tasks, composed (the class-statistics rules).
        task_statistics: per seen task, ``{file name: ClassStatistics}`` as saved with its adapter.
        query_pooling: the query feature's pooling (:func:`peft_memory.frozen_query`).
        first_task: ``--first_session_adaptation``: the first task's adapter name, whose query joins the frozen one
            for the class statistics (:func:`~peft_memory.continual.inference.statistics.statistics_query`); else ``None``.
        cil_rule: ``routed``, ``unified``, ``combined`` or ``product`` (:data:`CIL_RULES`).
        top_k: ``combined``, ``product``: the candidate tasks re-scored by their adapters.
        cache: what a rule builds once per evaluation (a classifier from the statistics), by name.
        outputs: the run's :class:`~.outputs.OutputCache` (outputs of evaluated batches, kept across the
            evaluations after each task), or ``None``.
        batch_key: the key of the batch being evaluated in ``outputs`` (set by the caller per batch), or ``None``:
            nothing is cached.
        prefix: the :class:`~.prefix.SharedPrefix` the caller opens per batch (the layers no adapter touches,
            computed once per batch), or ``None``.
    """

    model: object
    tasks: list[Task]
    evaluated: list[Task]
    method: object
    rule: object
    per_sample: bool = True
    num_shots: int | None = None
    statistics: dict = field(default_factory=dict)
    task_statistics: list = field(default_factory=list)
    query_pooling: str = "classifier"
    first_task: str | None = None
    cil_rule: str = "routed"
    top_k: int = 3
    cache: dict = field(default_factory=dict)
    outputs: OutputCache | None = None
    batch_key: object = None
    prefix: SharedPrefix | None = None

    def forward(self, batch: dict, adapter_names: list[str],
                rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(r, W)`` and classifier inputs ``(r, d)`` (``None`` if the classifier is not called) on the CPU of
        ``rows`` of ``batch`` (default: all), row ``i`` under ``adapter_names[i]``: from :attr:`outputs` when the
        batch has a key, else one routed forward without gradient."""
        if self.outputs is not None and self.batch_key is not None:
            return self.outputs.outputs(self.model, batch, self.batch_key, adapter_names, rows, self.prefix)
        sub = batch if rows is None else {k: v[rows.to(v.device)] for k, v in batch.items()}
        with self.prefix.rows(rows.cpu()) if self.prefix is not None and rows is not None else nullcontext():
            logits, features = routed_outputs(self.model, sub, adapter_names)
        return logits.cpu(), None if features is None else features.cpu()

    def query(self, batch: dict) -> torch.Tensor:
        """The class statistics' query of ``batch`` (:func:`~.statistics.statistics_query`), computed once per batch
        key."""
        def compute():
            return statistics_query(self.model, batch, self.query_pooling, self.first_task)

        if self.outputs is None or self.batch_key is None:
            return compute()
        return self.outputs.query(self.batch_key, compute)

    def cached(self, key: str, build):
        """``build()`` the first time ``key`` is asked for in this evaluation, then the same object."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def class_tasks(self, labels: torch.Tensor) -> torch.Tensor:
        """Task index (into ``tasks``) of each global class id of ``labels``; a class of several tasks (a shared
        label space) belongs to the first."""
        return class_owners(self.tasks, labels)

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


def evaluate_with(ctx: EvalContext, batch: dict, labels: torch.Tensor, k: int, infer) -> dict[str, torch.Tensor]:
    """Per-sample correctness on one test batch of task ``k``.

    ``til``: the true task's adapter among its classes. ``cil``: the prediction of ``ctx.cil_rule``
    (:func:`~.prediction.predict_with`: ``routed``, the task ``infer(ctx, batch)`` gives ``(batch,)``, then its
    adapter among its classes; ``unified``, that task's adapter (its masks, prompts) with every seen task's head,
    argmax over all seen classes (DualPrompt's classifier, Wang et al. 2022, Sec. 4.3); ``combined`` and ``product``,
    :mod:`~.combined`). ``task_id``: the predicted class lies in the right task.

    Returns bool tensors ``til``, ``cil``, ``task_id`` of shape ``(batch,)`` and ``prediction``, the CIL rule's
    global class ids ``(batch,)``.

    Raises:
        ValueError: for an unknown ``cil_rule``.
    """
    tasks = ctx.tasks
    labels = labels.cpu()
    task = tasks[k]
    n = labels.shape[0]
    til_pred = ctx.forward(batch, [task.name] * n)[0][:, : task.num_labels].argmax(dim=-1)
    return {"til": til_pred == labels, **correct(tasks, predict_with(ctx, batch, infer), labels, k)}


def correct(tasks: list[Task], prediction: Prediction, labels: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """``cil`` (the predicted class is the label, a local class of task ``k``) and ``task_id`` (it lies in task
    ``k``), bool ``(batch,)``; ``prediction``, the predicted global class ids ``(batch,)`` (confusion matrix)."""
    true_global = global_labels(tasks, torch.full_like(labels, k), labels)
    predicted = global_labels(tasks, prediction.task, prediction.local)
    return {"cil": predicted == true_global, "task_id": prediction.task == k, "prediction": predicted}


def class_metrics(tasks: list[Task], truth: list[int], predicted: list[int]) -> dict:
    """:func:`~.metrics.prediction_metrics` of CIL predictions over the classes of ``tasks``: ``truth`` and
    ``predicted`` are global class ids, named by the tasks' label names (in global id order)."""
    names = {g: t.label_names[c] for t in tasks for c, g in enumerate(t.global_labels)}
    classes = list(dict.fromkeys(names[g] for g in sorted(names)))
    return prediction_metrics([names[g] for g in truth], [names[g] for g in predicted], classes)
