"""Class statistics of every task, collected by the trainer right after the task's adapter is trained.

One pass over the task's training data (no augmentation, no gradient) through the frozen model gives the query
feature of each sample (:func:`peft_memory.frozen_query`, the one Prompt-ID uses, with ``--query_pooling``),
computed once per batch; with ``--first_session_adaptation``, concatenated with the query through the first task's
adapter (:func:`statistics_query`). A :class:`StatisticsSpace` maps the query (identity for the task-identity rules; RanPAC's
random projection for ``--method ranpac``) and accumulates :class:`~peft_memory.class_statistics.ClassStatistics`,
saved in the task's adapter folder. Under DDP the features are gathered (``gather_for_metrics``, which drops the
samples DDP repeats to even out the last batch), so every process holds the same statistics.

Hyper-parameters are chosen on held-out TRAINING data, never on the test set: ``--validation_fraction`` of each
class (:func:`held_out_rows`) is kept out of the adapter's training and out of the statistics' fit; the classifier
built from the earlier tasks' statistics and the rest of this task's is scored on it over every class seen so far,
once per candidate value, and the counts are saved with the statistics
(:class:`~peft_memory.class_statistics.Validation`). The held-out samples then join the statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ...class_statistics import (
    STATISTICS_FILE,
    ClassStatistics,
    GaussianClassifier,
    StatisticsAccumulator,
    Validation,
    predicted_labels,
)
from ...task_keys import adapter_query, frozen_query
from ..data.inputs import make_loader
from ..data.tasks import column_values

#: The statistics of ``--method ranpac``'s random projection, beside each of its adapters.
RANPAC_FILE = "ranpac_statistics.safetensors"
#: Candidate shrinkages of the Gaussian classifier, chosen per run on held-out training data.
SHRINKAGE_GRID = (0.001, 0.01, 0.03, 0.1, 0.3, 0.6)


@dataclass
class StatisticsSpace:
    """A feature space in which class statistics are kept.

    Attributes:
        filename: the statistics' file in each adapter folder.
        feature_map: ``(batch, d)`` query -> ``(batch, D)`` features, or ``None`` for the query itself.
        selections: ``{hyper-parameter: (candidate values, (statistics, value) -> classifier)}``; each classifier
            has ``labels`` and ``scores(features) -> (batch, C)``.
    """

    filename: str = STATISTICS_FILE
    feature_map: Callable[[torch.Tensor], torch.Tensor] | None = None
    selections: dict[str, tuple[tuple[float, ...], Callable]] = field(
        default_factory=lambda: {"shrinkage": (SHRINKAGE_GRID, GaussianClassifier)})

    def map(self, query: torch.Tensor) -> torch.Tensor:
        return query if self.feature_map is None else self.feature_map(query)


def held_out_rows(labels, fraction: float, seed: int) -> np.ndarray:
    """Rows of ``labels`` held out for validation: ``round(fraction * n_c)`` per class (at most ``n_c - 2``, so that
    every class keeps two samples to train on), drawn reproducibly from ``seed``; sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = [np.array([], dtype=int)]
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        n = min(int(round(fraction * len(rows))), max(0, len(rows) - 2))
        picked.append(rng.choice(rows, size=n, replace=False))
    return np.sort(np.concatenate(picked)).astype(int)


def split_train(train, fraction: float, seed: int):
    """``(fit, held_out)``: the training ``Dataset`` without and with the :func:`held_out_rows` (``held_out`` is
    ``None`` when nothing is held out)."""
    held = held_out_rows(column_values(train, "label"), fraction, seed)
    if len(held) == 0:
        return train, None
    keep = np.setdiff1d(np.arange(len(train)), held)
    return train.select(keep), train.select(held)


def gathered_features(ds, pipeline, args, accelerator, features: Callable[[dict, int], torch.Tensor | tuple]):
    """``features(batch, index)`` ``(n, D)`` (or a tuple of such tensors) and the local labels ``(n,)`` of every
    sample of ``ds``, in order, gathered from every process (no shuffling, no augmentation). ``index`` numbers the
    process's batches, the same in every pass over ``ds``."""
    loader = accelerator.prepare(make_loader(ds, pipeline, args.eval_batch_size, False, args.seed, args.dataloader_num_workers))
    out, labels = [], []
    for index, batch in enumerate(loader):
        y = batch.pop("labels")
        value = features(batch, index)
        parts = value if isinstance(value, tuple) else (value,)
        out.append([accelerator.gather_for_metrics(v).cpu() for v in parts])
        labels.append(accelerator.gather_for_metrics(y).cpu())
    stacked = tuple(torch.cat(column) for column in zip(*out))
    return (stacked if isinstance(value, tuple) else stacked[0]), torch.cat(labels)


def collect_statistics(global_labels: list[int], spaces: list[StatisticsSpace], fit: tuple, held_out: tuple | None,
                       previous: dict[str, list[ClassStatistics]]) -> dict[str, ClassStatistics]:
    """A task's statistics in each space, with validation counts for each space's hyper-parameters.

    Args:
        global_labels: the task's global class ids (local label ``i`` is ``global_labels[i]``).
        fit, held_out: ``(query features (n, d), local labels (n,))`` of the fitted and held-out training samples.
        previous: ``{file name: statistics of the earlier tasks}``.
    """
    out = {}
    for space in spaces:
        fit_x = space.map(fit[0])
        acc = StatisticsAccumulator(global_labels, fit_x.shape[1])
        acc.add(fit_x, fit[1])
        validation = {}
        if held_out is not None:
            val_x, val_y = space.map(held_out[0]), held_out[1]
            truth = torch.as_tensor(global_labels)[val_y]
            composed = ClassStatistics.compose([*previous.get(space.filename, []), acc.statistics()])
            for name, (grid, make) in space.selections.items():
                correct = [float((predicted_labels(make(composed, v), val_x) == truth).sum()) for v in grid]
                validation[name] = Validation(list(grid), torch.tensor(correct, dtype=torch.float64), len(truth))
            acc.add(val_x, val_y)
        stats = acc.statistics()
        stats.validation = validation
        out[space.filename] = stats
    return out


def statistics_query(model, batch: dict, pooling: str, first_task: str | None = None) -> torch.Tensor:
    """The query the class statistics are kept on, without gradient.

    ``first_task`` ``None``: the frozen model's query ``(batch, d)`` (:func:`peft_memory.frozen_query`). Else
    (``--first_session_adaptation``) ``(batch, 2d)``: the frozen query concatenated with the same pooling of the model
    routed through ``first_task``'s adapter (PEFT's ``adapter_names``), the first session's adapted backbone, frozen
    after that task: APER's concatenated prototype feature (Zhou et al., IJCV 2024, Sec. 4.2). Two forwards.
    """
    frozen = frozen_query(model, batch, pooling=pooling)
    if first_task is None:
        return frozen
    adapted = adapter_query(model, batch, first_task, pooling=pooling)
    return torch.cat([frozen, adapted.to(frozen.dtype)], dim=-1)



