"""Evaluation of one test batch after training task ``j``: task-incremental accuracy (task given),
class-incremental accuracy (task inferred) and task-identity accuracy.

:class:`EvalContext` names what an evaluation reads (the model, the adapters seen so far, the method and its
task-identity rule); :func:`evaluate_with` gives the class-incremental prediction of every rule that picks one task
per sample, by ``--cil_rule``: routed (the inferred task's adapter, among that task's classes), unified (DualPrompt's
classifier over every seen class), combined or product (:mod:`peft_memory.continual.inference.combined`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...tuners.base import apply_head
from ..data.tasks import Task
from .combined import ADAPTED_FILE, combination, combined_choice, head_inputs


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


#: ``--cil_rule`` values: how the class is predicted once a task-identity rule has spoken.
CIL_RULES = ("routed", "unified", "combined", "product")
#: The ``--cil_rule`` values that re-score the class statistics' task posterior with the adapters.
RESCORING_RULES = ("combined", "product")


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
    model, tasks = ctx.model, ctx.tasks
    labels = labels.cpu()
    task = tasks[k]
    n = labels.shape[0]
    with torch.no_grad():
        logits = model(**batch, adapter_names=[task.name] * n).logits[:, : task.num_labels]
    til_pred = logits.argmax(dim=-1).cpu()
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
        sub = {key: v[idx.to(v.device)] for key, v in batch.items()}
        with torch.no_grad():
            other = ctx.model(**sub, adapter_names=[ctx.names[t] for t in inferred[idx].tolist()]).logits.cpu()
        beyond = torch.arange(other.shape[-1]) >= torch.tensor(ctx.widths)[inferred[idx]].unsqueeze(1)
        pred_local[idx] = other.masked_fill(beyond, float("-inf")).argmax(dim=-1)  # within each row's task
    return inferred, pred_local


def _unified(ctx, batch, inferred):
    """Every seen head on the inferred adapter's classifier input; the argmax over all of them (task, local)."""
    heads = getattr(ctx.model.base_model, "task_heads", None)
    if heads is None or not all(n in heads for n in ctx.names):
        raise ValueError("--cil_rule unified applies every seen task's head to one feature: it needs adapters with "
                         "task heads (soft_mask, soft_mask_prompts, dual_prompt, head_only); use routed.")
    _, features = head_inputs(ctx.model, batch, [ctx.names[t] for t in inferred.tolist()])
    with torch.no_grad():
        logits = torch.cat([apply_head(heads[n], features) for n in ctx.names], dim=-1).float().cpu()
    owner = torch.cat([torch.full((w,), t) for t, w in enumerate(ctx.widths)])
    local = torch.cat([torch.arange(w) for w in ctx.widths])
    best = logits.argmax(dim=-1)
    return owner[best], local[best]


def check_cil_rule(cil_rule: str, rule) -> None:
    """Raise ``ValueError`` (with the fix) if ``--cil_rule`` cannot follow the task-identity ``rule``: ``combined``
    and ``product`` re-score a task posterior, which only the class-statistics rules with ``task_log_posterior``
    give."""
    if cil_rule in RESCORING_RULES and not hasattr(rule, "task_log_posterior"):
        raise ValueError(f"--cil_rule {cil_rule} re-scores a task posterior; --task_id_mode {rule.name} gives none: "
                         "use --task_id_mode gaussian.")


def _combined(ctx, batch):
    """``combined`` and ``product``: the task the adapters' evidence re-scores; the class by the chosen adapter's
    head, times the class statistics' posterior for ``product``."""
    rule = ctx.rule
    check_cil_rule(ctx.cil_rule, rule)
    evidence, beta = ctx.cached("combined", lambda: combination([s.get(ADAPTED_FILE) for s in ctx.task_statistics]))
    if ctx.cil_rule == "product":
        task_lp, class_scores = rule.posterior_and_class_scores(ctx, batch)
    else:
        task_lp, class_scores = rule.task_log_posterior(ctx, batch), None
    choices = combined_choice(ctx.model, batch, ctx.names, ctx.widths, task_lp, evidence, [beta], ctx.top_k,
                              class_scores)
    return choices[beta]
