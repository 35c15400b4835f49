"""Plots of a continual run, drawn with matplotlib's object API (a ``Figure`` of its own, no ``pyplot`` state), so
importing peft_memory never changes the user's matplotlib backend."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from .checkpoint import write_atomically


def plot_accuracy_matrix(acc, task_names: list[str], path: str, title: str = "Accuracy matrix") -> None:
    """Heatmap of ``A[i, j]`` (accuracy in %, rows = evaluated task, columns = after training task) to ``path``."""
    a = np.asarray(acc, dtype=float) * 100
    fig = Figure(figsize=(1.1 * len(task_names) + 2.5, 0.9 * len(task_names) + 1.8))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(a), vmin=0, vmax=100, cmap="viridis")
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if np.isfinite(a[i, j]):
                ax.text(j, i, f"{a[i, j]:.1f}", ha="center", va="center", color="w" if a[i, j] < 60 else "k")
    ax.set_xticks(range(len(task_names)), task_names, rotation=45, ha="right")
    ax.set_yticks(range(len(task_names)), task_names)
    ax.set_xlabel("after training task")
    ax.set_ylabel("evaluated on task")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"  # the temporary name has no image suffix
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format=fmt))


def plot_confusion_matrix(counts, labels: list[str], path: str, title: str = "Class-incremental confusion matrix") -> None:
    """Heatmap of ``counts[i, j]``: the inputs of true class ``i`` predicted as class ``j`` (every class seen), each
    row normalised to 1, to ``path``."""
    c = np.asarray(counts, dtype=float)
    rows = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    size = 0.35 * len(labels) + 3
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(rows, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format=fmt))


def plot_accuracy_curves(curves: dict[str, tuple[list[float], list[float]]], path: str, title: str,
                         bounds: dict[str, float] | None = None) -> None:
    """Class-incremental accuracy (%) after each task, one line per entry of ``curves`` (``label: (means, stds)``,
    fractions; the spread as error bars), and each of ``bounds`` (``label: accuracy``) as a dashed level, to
    ``path``."""
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    for label, (means, stds) in curves.items():
        x = np.arange(1, len(means) + 1)
        m, s = np.asarray(means) * 100, np.asarray(stds) * 100
        ax.errorbar(x, m, yerr=s, marker="o", markersize=3, capsize=2, elinewidth=0.6, label=label)
        ax.set_xticks(x)
    for label, value in (bounds or {}).items():
        ax.axhline(100 * value, linestyle="--", color="grey", linewidth=1)
        ax.annotate(label, (1, 100 * value), textcoords="offset points", xytext=(2, 3), fontsize=8, color="grey")
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("class-incremental accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format=fmt))
