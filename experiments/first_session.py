"""``python -m experiments first-session``: does the first session's size explain what the first-session methods lose
on the 10-task WordNet?

On ``wordnet_10split`` the first session adapts to 2 classes, on the 5-task sequence to 4. This trains each
first-session default (soft masks with the first-session product: the recommended recipe; APER: ``simple_cil`` with
its recommended recipe) on the same samples cut as 4 + 8 x 2 classes (:func:`split_tasks` with ``[1, 2, 2, 2, 2]``:
the 5-task sequence's first task kept whole, the others cut in two), with the slice's data, schedule and tuned
flags. Its final CIL is set beside the committed rows of the 10-task (first session of 2) and 5-task (first session
of 4) slices of the same seed; the report goes to ``results/first_session/``.
"""

from __future__ import annotations

import json
import os

from peft_memory.continual.data.tasks import split_tasks
from peft_memory.continual.run.arguments import parse_arguments
from peft_memory.continual.run.launch import build_trainer
from peft_memory.continual.run.loading import load_sequence

from .compare import BENCHMARKS, tuned_flags
from .tables import collect, setting_row

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
