"""The class-incremental prediction of a batch, by ``--cil_rule``, with a score and a rank for every seen class.

Evaluation compares :class:`Prediction` with the labels; ``ContinualClassifier.predict`` turns it into label names.
Both go through the same functions, so a prediction is what ``peft-memory evaluate`` scores. The classes of the
seen tasks are the columns, in task order (task 0's classes, then task 1's, ...). What a score is, per rule:

- ``routed``: ``P(c | t*)``, the softmax of the inferred task's head over its classes, times ``P(t*)`` when the
  task rule gives a task posterior (``gaussian``); only ``t*``'s classes are scored.
- ``unified`` and a method's one classifier over every class: the softmax over every seen class.
- ``combined`` and ``product``: ``P(t) P(c | t)`` over the candidate tasks' classes, ``P(t)`` the softmax of the
  re-scored task evidence over the candidates, ``P(c | t)`` the softmax of the candidate's head (plus the Gaussian's
  class scores for ``product``); ranked by task, then by class.
- memory tokens' every head in one forward: ``P(c | t)`` of every head, ranked by the heads' confidence, then by
  class.

The rank puts the predicted class first, always.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...tuners.base import apply_head
from .combined import ADAPTED_FILE, combination, combined_choice
from .declaration import CAPABILITIES, CIL_RULES, RESCORING_RULES, Inference, problems


@dataclass
class Prediction:
    """A batch's class-incremental prediction.

    Attributes:
        task: ``(batch,)`` the predicted task, an index into the seen tasks.
        local: ``(batch,)`` the predicted class within that task.
        scores: ``(batch, C)`` each seen class's score (columns in task order; 0 where the rule scored none).
        rank: ``(batch, C)`` the rule's ranking, larger first, ``-inf`` where unscored; the predicted class ranks
            first.
    """

    task: torch.Tensor
    local: torch.Tensor
    scores: torch.Tensor
    rank: torch.Tensor


def offsets(widths: list[int]) -> torch.Tensor:
    """The first column of each task's classes ``(T,)`` in the task-ordered columns of :class:`Prediction`."""
    return torch.tensor([0, *widths[:-1]]).cumsum(0)


def dense(scores: torch.Tensor, widths: list[int]) -> Prediction:
    """A prediction from one distribution over every seen class ``(batch, C)`` (task-ordered columns): the argmax."""
    owner = torch.cat([torch.full((w,), t) for t, w in enumerate(widths)])
    local = torch.cat([torch.arange(w) for w in widths])
    best = scores.argmax(dim=-1)
    return Prediction(owner[best], local[best], scores, scores.clone())


def hierarchical(task: torch.Tensor, task_probs: torch.Tensor, class_probs: list[torch.Tensor | None],
                 task_order: torch.Tensor, widths: list[int]) -> Prediction:
    """A prediction ranked by task, then by class.

    Args:
        task: ``(batch,)`` the predicted task (it comes first whatever ``task_order`` says).
        task_probs: ``(batch, T)`` ``P(t)`` (1 for a rule without one); class_probs: per task ``(batch, W_t)``
            ``P(c | t)``, ``NaN`` rows (or ``None``) where the task was not scored.
        task_order: ``(batch, T)`` the tasks' order, larger first.
    """
    n, starts, columns = task.shape[0], offsets(widths), sum(widths)
    task_order = task_order.clone().to(torch.float64)
    task_order[torch.arange(n), task] = float("inf")
    scores = torch.zeros(n, columns, dtype=torch.float64)
    within = torch.full_like(scores, float("-inf"))  # P(c | t), the key within a task
    among = torch.full_like(scores, float("-inf"))  # the task's order, the first key
    for t, probs in enumerate(class_probs):
        if probs is None:
            continue
        cols = slice(int(starts[t]), int(starts[t]) + widths[t])
        scored = ~probs.isnan()
        scores[:, cols] = torch.where(scored, probs * task_probs[:, t : t + 1], 0.0)
        within[:, cols] = torch.where(scored, probs, float("-inf"))
        among[:, cols] = torch.where(scored, task_order[:, t : t + 1], float("-inf"))
    # lexicographic (task order, then P(c | t)): two stable sorts, as a sum of keys would lose tiny probabilities
    by_class = within.argsort(dim=-1, descending=True, stable=True)
    order = by_class.gather(1, among.gather(1, by_class).argsort(dim=-1, descending=True, stable=True))
    rank = torch.empty_like(scores).scatter_(1, order, torch.arange(columns, 0, -1, dtype=torch.float64).expand(n, -1))
    rank = rank.masked_fill(within == float("-inf"), float("-inf"))
    local = rank.argmax(dim=-1) - starts[task]
    return Prediction(task, local, scores, rank)


def predict_with(ctx, batch: dict, infer) -> Prediction:
    """The prediction of ``ctx.cil_rule`` for ``batch`` (:class:`~.evaluation.EvalContext`), with the task rule
    ``infer(ctx, batch) -> (batch,)`` for ``routed`` and ``unified``.

    Raises:
        ValueError: for an unknown ``cil_rule``, or one the adapters cannot support at evaluation time.
    """
    if ctx.cil_rule == "routed":
        return _routed(ctx, batch, infer(ctx, batch))
    if ctx.cil_rule == "unified":
        return _unified(ctx, batch, infer(ctx, batch))
    if ctx.cil_rule in RESCORING_RULES:
        return _combined(ctx, batch)
    raise ValueError(f"--cil_rule {ctx.cil_rule!r} is unknown; choose one of {list(CIL_RULES)}.")


def _routed(ctx, batch, inferred: torch.Tensor) -> Prediction:
    """The inferred task's adapter among its own classes; ``P(t*)`` from the task rule's posterior if it has one."""
    n, widths = inferred.shape[0], ctx.widths
    logits = ctx.forward(batch, [ctx.names[t] for t in inferred.tolist()])[0].to(torch.float64)
    beyond = torch.arange(logits.shape[-1]) >= torch.tensor(widths)[inferred].unsqueeze(1)
    within = logits.masked_fill(beyond, float("-inf")).softmax(dim=-1)  # within each row's task
    class_probs = []
    for t, w in enumerate(widths):
        probs = torch.full((n, w), float("nan"), dtype=torch.float64)
        rows, m = inferred == t, min(w, within.shape[-1])  # an output narrower than the task: its first columns
        probs[rows, :m] = within[rows, :m]
        class_probs.append(probs)
    task_probs = torch.ones(n, len(widths), dtype=torch.float64)
    if hasattr(ctx.rule, "task_log_posterior") and ctx.statistics:
        task_probs = ctx.rule.task_log_posterior(ctx, batch).to(torch.float64).exp()
    order = torch.nn.functional.one_hot(inferred, len(widths)).to(torch.float64)
    return hierarchical(inferred, task_probs, class_probs, order, widths)


def _unified(ctx, batch, inferred: torch.Tensor) -> Prediction:
    """Every seen head on the inferred adapter's classifier input; the softmax over all of them."""
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
    return dense(logits.to(torch.float64).softmax(dim=-1), ctx.widths)


def _combined(ctx, batch) -> Prediction:
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
    choice = combined_choice(lambda adapters: ctx.forward(batch, adapters), ctx.names, ctx.widths, task_lp, evidence,
                             [beta], ctx.top_k, class_scores, details=True)[beta]
    n, widths = choice.task.shape[0], ctx.widths
    rows = torch.arange(n)
    task_probs = torch.zeros(n, len(widths), dtype=torch.float64)
    task_order = torch.full_like(task_probs, float("-inf"))
    class_probs = [torch.full((n, w), float("nan"), dtype=torch.float64) for w in widths]
    for j in range(choice.candidates.shape[1]):
        t = choice.candidates[:, j]
        task_probs[rows, t] = choice.task_probs[:, j]
        task_order[rows, t] = choice.task_probs[:, j]
        for u in t.unique().tolist():
            mine = t == u
            class_probs[u][mine] = choice.class_probs[mine, j, : widths[u]]
    return hierarchical(choice.task, task_probs, class_probs, task_order, widths)
