"""``--cil_rule combined``: the class statistics' task posterior, re-scored by the candidate tasks' own adapters.

For a test sample ``x`` and the seen tasks ``t``:

1. ``log p(t | x)``: the Gaussian classifier on the frozen query (:class:`~peft_memory.class_statistics.
   GaussianClassifier`), its class posterior summed over each task's classes;
2. the ``k`` tasks with the largest posterior (``--combine_top_k``) run their adapter on ``x`` (one routed forward
   per rank): the adapter's head gives the class within the task, and the head's INPUT feature ``f_t(x)`` is scored
   against task ``t``'s adapted statistics, a Gaussian of that adapter's own features on its task's training data
   (class means, shared covariance shrunk by :data:`ADAPTED_SHRINKAGE`):
   ``m_t(x) = -min_c (f_t(x) - mu_c)^T P_t (f_t(x) - mu_c)``, the Mahalanobis evidence that ``x`` belongs to task
   ``t`` (Lee et al. 2018), standardised by its mean and spread on task ``t``'s held-out training samples:
   ``z_t(x) = (m_t(x) - mean_t) / std_t``;
3. the task ``argmax_t log p(t | x) + beta * z_t(x)`` over the candidates, and its adapter's class.

``--cil_rule product`` picks the same task, then the class ``c`` of that task maximising the product of the two
posteriors, ``log softmax_t(c) + log p(c | x)``: the adapter's head and the frozen Gaussian classifier as a product
of experts (Hinton 2002) with equal weights, no hyper-parameter. Both normalisers are constant within a task, so this
is the argmax of the head's logit plus the Gaussian's discriminant score.

``beta`` (:data:`WEIGHT_GRID`) is chosen on held-out training data: after task ``t`` is trained, its held-out samples
are scored this way against every seen task, once per candidate ``beta``, and the counts of right tasks are saved
with the adapted statistics (``adapted_statistics.safetensors``); any subset of adapters sums them and picks the
best. ``beta = 0`` is routing by the class statistics alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ...class_statistics import ClassStatistics, StatisticsAccumulator
from .outputs import routed_outputs

ADAPTED_FILE = "adapted_statistics.safetensors"
#: Shrinkage of each adapter's covariance (fixed a priori, not tuned).
ADAPTED_SHRINKAGE = 0.1
#: Candidate weights ``beta`` of the adapters' evidence, chosen on held-out training data.
WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


def head_inputs(model, batch: dict, adapter_names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward routed per sample: the logits ``(batch, num_labels)`` and the classifier's input
    ``(batch, features)`` under each sample's adapter (no gradient; :func:`~.outputs.routed_outputs`).

    Raises:
        ValueError: for a model whose classifier is not called (a bare encoder, memory tokens' own heads).
    """
    logits, features = routed_outputs(model, batch, adapter_names)
    if features is None:
        raise ValueError("--cil_rule combined and product read the classifier's input: load the model with its head "
                         "(AutoModelFor...Classification), with adapters whose heads read it.")
    return logits, features


class AdaptedEvidence:
    """How typical a feature of task ``t``'s adapter is for task ``t``: ``z_t(x)`` of the module docstring.

    Args:
        stats: task ``t``'s adapted statistics; their ``calibration`` ``(2,)`` holds the mean and spread of the
            evidence on held-out samples of task ``t``.
    """

    def __init__(self, stats: ClassStatistics):
        sigma = stats.covariance()
        d = sigma.shape[0]
        target = torch.trace(sigma) / d * torch.eye(d, dtype=sigma.dtype)
        self.precision = torch.linalg.inv((1 - ADAPTED_SHRINKAGE) * sigma + ADAPTED_SHRINKAGE * target)
        self.means = stats.means
        self.calibration = stats.calibration

    def raw(self, features: torch.Tensor) -> torch.Tensor:
        """``m_t(x)``: minus the smallest squared Mahalanobis distance to a class mean, ``(batch,)``."""
        x = features.to(torch.float64)
        diff = x[:, None, :] - self.means.to(x.device)[None]  # (batch, C, d)
        return -torch.einsum("bcd,de,bce->bc", diff, self.precision.to(x.device), diff).min(dim=-1).values

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """``z_t(x)``, ``(batch,)``."""
        mean, std = self.calibration.tolist()
        return (self.raw(features) - mean) / max(std, 1e-12)


class Choice(NamedTuple):
    """The combined rule's choice for a batch at one weight ``beta``: ``task`` and ``local`` ``(batch,)``; with
    details, the ``candidates`` ``(batch, k)``, their probabilities ``task_probs`` ``(batch, k)`` (the softmax of
    ``log p(t | x) + beta z_t(x)`` over the candidates) and each candidate's class probabilities ``class_probs``
    ``(batch, k, W)`` (the softmax of its head's logits, plus the frozen classifier's scores for ``product``;
    ``NaN`` beyond its classes)."""

    task: torch.Tensor
    local: torch.Tensor
    candidates: torch.Tensor | None = None
    task_probs: torch.Tensor | None = None
    class_probs: torch.Tensor | None = None


def combined_choice(forward, names: list[str], widths: list[int], task_log_posterior: torch.Tensor,
                    evidence: list[AdaptedEvidence], weights: list[float], top_k: int,
                    class_scores: torch.Tensor | None = None, details: bool = False) -> dict[float, Choice]:
    """The combined rule for one batch, for each of several ``weights`` at once (the adapters run once).

    Args:
        forward: ``adapter names (one per sample) -> (logits (batch, W), classifier inputs (batch, d))``, the batch
            routed per sample (:func:`head_inputs`, or an evaluation's cached outputs).
        task_log_posterior: ``(batch, T)`` ``log p(t | x)`` over the seen tasks ``names``.
        evidence: one :class:`AdaptedEvidence` per seen task; widths: each task's number of classes.
        class_scores: ``--cil_rule product``: ``(batch, T, W)`` the frozen classifier's score of each task's classes
            in the task's label order (``W`` the widest task); added to the chosen adapter's logits before the
            argmax. ``None``: the adapter's head alone (``combined``).
        details: also give the candidates and their probabilities (:class:`Choice`).

    Returns:
        ``{beta: Choice}`` on the CPU.
    """
    n, num_tasks = task_log_posterior.shape
    k = min(top_k, num_tasks)
    candidates = task_log_posterior.topk(k, dim=-1).indices.cpu()  # (batch, k)
    prior = task_log_posterior.cpu().gather(1, candidates)
    z = torch.empty(n, k, dtype=torch.float64)
    within_all = torch.full((n, k, max(widths)), float("-inf"), dtype=torch.float64)
    for j in range(k):
        logits, features = forward([names[t] for t in candidates[:, j].tolist()])
        if features is None:
            raise ValueError("--cil_rule combined and product read the classifier's input, which these adapters' "
                             "heads do not read.")
        logits, features = logits.cpu(), features.cpu()
        for t in candidates[:, j].unique().tolist():
            rows = (candidates[:, j] == t).nonzero().squeeze(1)
            z[rows, j] = evidence[t](features[rows])
            within = logits[rows, : widths[t]].to(torch.float64)
            if class_scores is not None:
                within = within + class_scores[rows, t, : widths[t]].to(torch.float64)
            within_all[rows, j, : widths[t]] = within
    local = within_all.argmax(dim=-1)  # (batch, k): each candidate's class
    out = {}
    for beta in weights:
        score = prior.to(torch.float64) + beta * z
        best = score.argmax(dim=-1, keepdim=True)
        choice = Choice(candidates.gather(1, best)[:, 0], local.gather(1, best)[:, 0])
        if details:
            probs = within_all.softmax(dim=-1)
            choice = choice._replace(candidates=candidates, task_probs=score.softmax(dim=-1),
                                     class_probs=probs.masked_fill(within_all == float("-inf"), float("nan")))
        out[beta] = choice
    return out


def combination(task_statistics: list[ClassStatistics | None]) -> tuple[list[AdaptedEvidence], float]:
    """The evidence of each seen task and the weight ``beta`` its adapters' held-out samples prefer.

    Raises:
        ValueError: if a seen adapter was saved without adapted statistics.
    """
    if any(s is None for s in task_statistics):
        raise ValueError(f"--cil_rule combined reads {ADAPTED_FILE} beside each adapter; some adapters have none "
                         "(methods without a classifier input per task, or adapters from an older peft_memory).")
    evidence = [AdaptedEvidence(s) for s in task_statistics]
    votes = [s.validation["combination_weight"] for s in task_statistics if "combination_weight" in s.validation]
    beta = sum(votes[1:], votes[0]).best() if votes else 1.0
    return evidence, beta


def adapted_statistics(global_labels: list[int], fit: tuple[torch.Tensor, torch.Tensor],
                       held_out: torch.Tensor | None, validate=None) -> ClassStatistics:
    """A task's adapted statistics: its adapter's classifier-input features on the task's fitted training samples,
    calibrated on the held-out ones (the fitted ones when nothing is held out), with the ``beta`` validation counts
    of ``validate(evidence)`` if given.

    Args:
        fit: the features ``(n, D)`` of the fitted samples through the task's adapter and their local labels
            ``(n,)``; held_out: those of the held-out samples ``(m, D)``, or ``None``.
        validate: ``evidence -> Validation`` for this task's held-out samples, or ``None``.
    """
    x, y = fit
    acc = StatisticsAccumulator(global_labels, x.shape[1])
    acc.add(x, y)
    stats = acc.statistics()
    stats.calibration = torch.zeros(2, dtype=torch.float64)
    evidence = AdaptedEvidence(stats)
    scores = evidence.raw(held_out if held_out is not None else x)
    stats.calibration = torch.stack([scores.mean(), scores.std(unbiased=False)]).to(torch.float64)
    evidence.calibration = stats.calibration
    if validate is not None:
        stats.validation = {"combination_weight": validate(evidence)}
    return stats
