"""``python -m experiments first-session``: does the first session's size explain what the first-session methods lose
on the 10-task WordNet?

On ``wordnet_10split`` the first session adapts to 2 classes, on the 5-task sequence to 4. This trains each
first-session default (soft masks with the first-session product: the recommended recipe; APER: ``simple_cil`` with
its recommended recipe) on the same samples cut as 4 + 8 x 2 classes (:func:`split_tasks` with ``[1, 2, 2, 2, 2]``:
the 5-task sequence's first task kept whole, the others cut in two), with the slice's data, schedule and tuned
flags. Its final CIL is set beside the committed rows of the 10-task (first session of 2) and 5-task (first session
of 4) slices of the same seed; the report goes to ``results/first_session/``. ``--table`` trains nothing: it sets
the committed reports in one table, mean ± std over their seeds (:func:`table`).
"""

from __future__ import annotations

import json
import os

from peft_memory.continual.data.tasks import split_tasks
from peft_memory.continual.run.arguments import parse_arguments
from peft_memory.continual.run.checkpoint import read_json
from peft_memory.continual.run.launch import build_trainer
from peft_memory.continual.run.loading import load_sequence

from .compare import BENCHMARKS, tuned_flags
from .tables import collect, mean_std, setting_row, update_markdown

#: The runs: (method, recipe); each row of the report names the committed rows it is set beside.
RUNS = (("soft_mask", "recommended"), ("simple_cil", "recommended"))
#: The cut of the 5-task sequence: its first task whole, every other in two.
CUT = [1, 2, 2, 2, 2]


def first_session(seed: int = 0, output_dir: str = "outputs/first_session", results_dir: str = "results/compare",
                  report_dir: str = "results/first_session", tuning_dir: str = "results/tuning") -> dict:
    """Train :data:`RUNS` on the 4 + 8 x 2 cut of the WordNet seed ``seed`` and report their CIL, task-identity
    accuracy and accuracy matrix beside the committed 10-task and 5-task rows of the same setting and seed (``None``
    where a slice has not run). Writes ``<report_dir>/wordnet_seed_<seed>.json``; returns the report."""
    flags = [*BENCHMARKS["wordnet"], *tuned_flags(tuning_dir, "wordnet"), "--seed", str(seed)]
    sequence = split_tasks(load_sequence(parse_arguments(flags)), CUT, "wordnet_first4_then_2")
    report = {"seed": seed, "cut": [len(t.label_names) for t in sequence.tasks], "runs": {}}
    keys = ("average_accuracy", "task_id_accuracy", "accuracy_matrix")
    slices = {b: collect(results_dir, b) for b in ("wordnet_10split", "wordnet")}  # read once for both runs
    for method, recipe in RUNS:
        run_dir = os.path.join(output_dir, f"seed_{seed}", method)
        args = parse_arguments([*flags, "--method", method, "--recipe", recipe, "--output_dir", run_dir,
                                "--overwrite_output_dir"])
        trainer = build_trainer(args, sequence=sequence)
        results = trainer.run().to_json()
        row = setting_row(method, trainer.spec.inference)
        committed = {b: (rows.get(row) or {}).get(seed) for b, rows in slices.items()}
        report["runs"][f"{method} ({trainer.spec.inference.label})"] = {
            "first_session_of_4": {k: results[k] for k in keys},
            **{f"committed_{b}": {k: r[k] for k in keys} if r else None for b, r in committed.items()},
        }
        report["versions"] = results["versions"]
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, f"wordnet_seed_{seed}.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


#: The table's columns: (heading, the report's key).
COLUMNS = (("first session of 2 (10 x 2)", "committed_wordnet_10split"),
           ("first session of 4 (4 + 8 x 2)", "first_session_of_4"), ("5 x 4", "committed_wordnet"))


def table(report_dir: str = "results/first_session", results: str | None = None) -> str:
    """The reports of :func:`first_session` in ``report_dir`` as one markdown table: each run's final CIL and
    task-identity accuracy, mean ± std over the seeds reported; written between ``<!-- first-session -->`` and
    ``<!-- /first-session -->`` of ``results`` (docs/results.md) when given.

    Raises:
        ValueError: if ``report_dir`` holds no report, or ``results`` lacks the markers.
    """
    names = sorted(n for n in os.listdir(report_dir) if n.endswith(".json")) if os.path.isdir(report_dir) else []
    if not names:
        raise ValueError(f"{report_dir} holds no report: run `python -m experiments first-session --seed 0` first.")
    reports = [read_json(os.path.join(report_dir, n), "delete it: python -m experiments first-session writes it "
                         "again") for n in names]
    reports.sort(key=lambda r: r["seed"])
    lines = ["| final CIL (task-id) | " + " | ".join(h for h, _ in COLUMNS) + " | seeds |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for run in dict.fromkeys(run for r in reports for run in r["runs"]):
        cells = []
        for _, key in COLUMNS:
            parts = [(r["runs"].get(run) or {}).get(key) or {} for r in reports]
            cells.append(f"{mean_std([p.get('average_accuracy') for p in parts])} "
                         f"({mean_std([p.get('task_id_accuracy') for p in parts])})")
        seeds = ",".join(str(r["seed"]) for r in reports if run in r["runs"])
        lines.append(f"| {run} | " + " | ".join(cells) + f" | {seeds} |")
    text = "\n".join(lines)
    return update_markdown(results, "first-session", text) if results else text
