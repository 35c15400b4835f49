"""Evaluation of one test batch after training task ``j``: task-incremental accuracy (task given),
class-incremental accuracy (task inferred) and task-identity accuracy.

:class:`EvalContext` names what an evaluation reads (the model, the adapters seen so far, the method and its
task-identity rule); :func:`evaluate_with` gives the class-incremental prediction of every rule that picks one task
per sample, by ``--cil_rule``: routed (the inferred task's adapter, among that task's classes), unified (DualPrompt's
classifier over every seen class), combined or product (:mod:`peft_memory.continual.inference.combined`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ...tuners.base import apply_head
from ..data.tasks import Task
from .combined import ADAPTED_FILE, combination, combined_choice
from .declaration import CAPABILITIES, CIL_RULES, RESCORING_RULES, Inference, problems
from .outputs import OutputCache, routed_outputs
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

    ``til``: the true task's adapter among its classes. ``cil``, by ``ctx.cil_rule``: ``routed``, the task
    ``infer(ctx, batch)`` gives ``(batch,)``, then its adapter among its classes; ``unified``, that task's adapter
    (its masks, prompts) with every seen task's head, argmax over all seen classes (DualPrompt's classifier, Wang
    et al. 2022, Sec. 4.3); ``combined`` and ``product``, :mod:`peft_memory.continual.inference.combined`. ``task_id``: the
    predicted class
    lies in the right task.

    Returns bool tensors ``til``, ``cil``, ``task_id`` of shape ``(batch,)``.

    Raises:
        ValueError: for an unknown ``cil_rule``.
    """
    tasks = ctx.tasks
    labels = labels.cpu()
    task = tasks[k]
    n = labels.shape[0]
    til_pred = ctx.forward(batch, [task.name] * n)[0][:, : task.num_labels].argmax(dim=-1)
    if ctx.cil_rule == "routed":
        pred_task, pred_local = _routed(ctx, batch, k, infer(ctx, batch), til_pred)
    elif ctx.cil_rule == "unified":
        pred_task, pred_local = _unified(ctx, batch, infer(ctx, batch))
    elif ctx.cil_rule in RESCORING_RULES:
        pred_task, pred_local = _combined(ctx, batch)
    else:
        raise ValueError(f"--cil_rule {ctx.cil_rule!r} is unknown; choose one of {list(CIL_RULES)}.")
    true_global = global_labels(tasks, torch.full_like(labels, k), labels)
    cil = global_labels(tasks, pred_task, pred_local) == true_global
    return {"til": til_pred == labels, "cil": cil, "task_id": pred_task == k}


def _routed(ctx, batch, k, inferred, til_pred):
    """The inferred task's adapter among its own classes; only samples routed elsewhere than ``k`` need a forward."""
    pred_local = til_pred.clone()
    wrong = inferred != k
    if wrong.any():
        idx = wrong.nonzero().squeeze(1)
        other = ctx.forward(batch, [ctx.names[t] for t in inferred[idx].tolist()], rows=idx)[0]
        beyond = torch.arange(other.shape[-1]) >= torch.tensor(ctx.widths)[inferred[idx]].unsqueeze(1)
        pred_local[idx] = other.masked_fill(beyond, float("-inf")).argmax(dim=-1)  # within each row's task
    return inferred, pred_local


def _unified(ctx, batch, inferred):
    """Every seen head on the inferred adapter's classifier input; the argmax over all of them (task, local)."""
    heads = getattr(ctx.model.base_model, "task_heads", None)
    if heads is None or not all(n in heads for n in ctx.names):
        raise ValueError("--cil_rule unified applies every seen task's head to one feature: it needs adapters with "
                         "task heads (soft_mask, soft_mask_prompts, dual_prompt, head_only); use routed.")
    _, features = ctx.forward(batch, [ctx.names[t] for t in inferred.tolist()])
    if features is None:
        raise ValueError("--cil_rule unified applies every seen head to the classifier's input, which these adapters' "
                         "heads do not read; use routed.")
    device = next(heads[ctx.names[0]].parameters()).device
    with torch.no_grad():
        logits = torch.cat([apply_head(heads[n], features.to(device)) for n in ctx.names], dim=-1).float().cpu()
    owner = torch.cat([torch.full((w,), t) for t, w in enumerate(ctx.widths)])
    local = torch.cat([torch.arange(w) for w in ctx.widths])
    best = logits.argmax(dim=-1)
    return owner[best], local[best]


def _combined(ctx, batch):
    """``combined`` and ``product``: the task the adapters' evidence re-scores; the class by the chosen adapter's
    head, times the class statistics' posterior for ``product``."""
    rule = ctx.rule
    found = problems(frozenset(CAPABILITIES), Inference(rule.name, ctx.cil_rule))  # the rules' own pairing
    if found:
        raise ValueError("; ".join(found) + ".")
    evidence, beta = ctx.cached("combined", lambda: combination([s.get(ADAPTED_FILE) for s in ctx.task_statistics]))
    if ctx.cil_rule == "product":
        task_lp, class_scores = rule.posterior_and_class_scores(ctx, batch)
    else:
        task_lp, class_scores = rule.task_log_posterior(ctx, batch), None
    choices = combined_choice(lambda adapters: ctx.forward(batch, adapters), ctx.names, ctx.widths, task_lp, evidence,
                              [beta], ctx.top_k, class_scores)
    return choices[beta]
