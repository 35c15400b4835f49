"""Continual-learning metrics over an accuracy matrix.

``A[i, j]`` is the accuracy (in [0, 1], or percent: the functions are unit-free) on task ``i``'s test set after
training task ``j``; entries with ``i > j`` are undefined and stored as NaN. ``T`` tasks have been seen. A task
without test data (a grown run's whose data are gone) has NaN in its row: the means leave it out.
"""

from __future__ import annotations

import numpy as np


def _matrix(acc) -> np.ndarray:
    a = np.asarray(acc, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square (T, T) with T >= 1, got shape {a.shape}.")
    return a


def average_accuracy(acc) -> float:
    """``ACC_T = mean_{i <= T} A[i, T]``, unweighted over tasks (L2P/DualPrompt/Soft-TF)."""
    a = _matrix(acc)
    return float(np.nanmean(a[:, -1]))


def accuracy_curve(acc) -> list[float]:
    """``[ACC_1, ..., ACC_T]``: :func:`average_accuracy` after each task, ``ACC_j = mean_{i <= j} A[i, j]`` (the
    curve the continual-learning papers draw against the number of tasks)."""
    a = _matrix(acc)
    return [float(np.nanmean(a[: j + 1, j])) for j in range(a.shape[0])]


def forgetting(acc) -> float:
    """``F_T = mean_{i < T} (max_{j <= T} A[i, j] - A[i, T])``: the L2P/DualPrompt/Soft-TF code's variant, ``>= 0``.

    Chaudhry et al. (2018) take the max over ``j < T`` instead. Returns 0.0 for a single task.
    """
    a = _matrix(acc)
    t = a.shape[0]
    if t == 1:
        return 0.0
    rows = [i for i in range(t - 1) if not np.isnan(a[i, -1])]
    return float(np.mean([np.nanmax(a[i, i:]) - a[i, -1] for i in rows])) if rows else 0.0


def backward_transfer(acc) -> float:
    """``BWT_T = mean_{i < T} (A[i, T] - A[i, i])`` (Lopez-Paz and Ranzato, 2017). Negative means forgetting."""
    a = _matrix(acc)
    t = a.shape[0]
    if t == 1:
        return 0.0
    rows = [i for i in range(t - 1) if not np.isnan(a[i, -1]) and not np.isnan(a[i, i])]
    return float(np.mean([a[i, -1] - a[i, i] for i in rows])) if rows else 0.0


def summarize(acc) -> dict[str, float]:
    """All three metrics of ``acc`` as a dict."""
    return {
        "average_accuracy": average_accuracy(acc),
        "forgetting": forgetting(acc),
        "backward_transfer": backward_transfer(acc),
    }


#: Up to this many classes ``prediction_metrics`` also gives the dense confusion matrix (and runs draw it).
DENSE_CONFUSION_CLASSES = 100


def prediction_metrics(truth: list[str], predicted: list[str], classes: list[str]) -> dict:
    """Accuracy, accuracy per true class and the confusions over ``classes`` plus any true class the run has not seen
    (listed last, never predicted). Linear in the number of inputs; the dense matrix only for few classes.

    Returns ``accuracy`` (fraction, ``None`` without inputs), ``per_class_accuracy`` (class name -> fraction, classes
    with inputs only), ``classes``, ``confusions`` (``[true, predicted, count]`` of every mistaken pair, most frequent
    first), ``confusion_matrix`` (``(C, C)`` nested lists of counts, rows true and columns predicted; ``None`` above
    :data:`DENSE_CONFUSION_CLASSES` classes) and ``num_inputs``.
    """
    from collections import Counter

    classes = list(dict.fromkeys([*classes, *truth]))
    pairs = Counter(zip(truth, predicted))
    totals, right = Counter(truth), {t: n for (t, p), n in pairs.items() if t == p}
    per_class = {c: right.get(c, 0) / totals[c] for c in classes if totals[c]}
    mistakes = sorted(([t, p, n] for (t, p), n in pairs.items() if t != p), key=lambda e: (-e[2], e[0], e[1]))
    dense = None
    if len(classes) <= DENSE_CONFUSION_CLASSES:
        index = {c: i for i, c in enumerate(classes)}
        dense = [[0] * len(classes) for _ in classes]
        for (t, p), n in pairs.items():
            dense[index[t]][index[p]] = n
    accuracy = sum(right.values()) / len(truth) if truth else None
    return {"accuracy": accuracy, "per_class_accuracy": per_class, "classes": classes, "confusions": mistakes,
            "confusion_matrix": dense, "num_inputs": len(truth)}
