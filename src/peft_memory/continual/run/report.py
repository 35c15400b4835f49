"""A Markdown table comparing finished runs (``peft-memory report DIR [DIR ...]``)."""

from __future__ import annotations

from .results import RunResults, method_label

COLUMNS = (
    ("average_accuracy", "CIL avg acc"),
    ("til_average_accuracy", "TIL avg acc"),
    ("forgetting", "forgetting"),
    ("task_id_accuracy", "task-id acc"),
)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def markdown_table(run_dirs: list[str]) -> str:
    """One row per run: method, task identity, then the metrics of :data:`COLUMNS` in percent; a run that has not
    finished every task says so beside its name (its metrics cover the tasks done)."""
    lines = ["| run | method | task identity | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(COLUMNS)]
    for d in run_dirs:
        r = RunResults.load(d)
        done = "" if r.tasks_completed >= len(r.tasks) else f" (HALF-FINISHED: {r.tasks_completed} of {len(r.tasks)} tasks)"
        lines.append(f"| `{d}`{done} | {method_label(r.method, r.config)} | {r.task_identity.label} | "
                     + " | ".join(_pct(getattr(r, k)) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)
