"""``python -m experiments reproduce``: a method trained with a recipe and nothing else set, on the data, seed and
schedule of a committed slice, compared with that slice's row for the same setting. With ``--recipe recommended``
this checks that the plain defaults give the published numbers; with ``--recipe paper``, that the papers' rules
give theirs. The report (``results/reproduce/<benchmark>/seed_<k>/<method>__<recipe>.json``) records both runs'
metrics and whether their accuracy matrices are identical."""

from __future__ import annotations

import json
import os

from peft_memory.continual.run.arguments import parse_arguments
from peft_memory.continual.run.launch import build_trainer

from .compare import BENCHMARKS
from .tables import collect, setting_row

#: The flags of :data:`~.compare.BENCHMARKS` that are defaults, left out so that the defaults themselves are tested.
DEFAULTED = ("--learning_rate",)


def data_flags(benchmark: str) -> list[str]:
    """The slice's data, schedule and batch flags of ``benchmark``, without those :data:`DEFAULTED` leaves out."""
    flags, out = BENCHMARKS[benchmark], []
    for i in range(0, len(flags), 2):
        if flags[i] not in DEFAULTED:
            out += flags[i : i + 2]
    return out


def reproduce(benchmark: str, seed: int, method: str, recipe: str, output_dir: str, results_dir: str,
              report_dir: str, extra: list[str] | None = None) -> dict:
    """Train ``method`` with ``--recipe recipe`` on ``benchmark``'s slice ``seed`` and compare with the committed row.

    Raises:
        ValueError: if ``results_dir`` has no committed row of that setting for that seed.
    """
    run_dir = os.path.join(output_dir, benchmark, f"seed_{seed}", f"{method}__{recipe}")
    argv = [*data_flags(benchmark), *(extra or []), "--method", method, "--recipe", recipe, "--seed", str(seed),
            "--output_dir", run_dir, "--overwrite_output_dir"]
    trainer = build_trainer(parse_arguments(argv))
    row = setting_row(method, trainer.spec.inference)
    committed = collect(results_dir, benchmark).get(row, {}).get(seed)
    if committed is None:
        raise ValueError(f"{results_dir} has no seed-{seed} row {row.name} | {row.task_identity} | {row.cil_rule} of "
                         f"{benchmark}; run make compare first.")
    ran = trainer.run().to_json()
    keys = ("accuracy_matrix", "til_accuracy_matrix", "task_id_accuracy_matrix")
    report = {"benchmark": benchmark, "seed": seed, "method": method, "recipe": recipe,
              "setting": trainer.spec.inference.label, "command": "peft-memory train " + " ".join(argv),
              "identical": {k: ran[k] == committed[k] for k in keys},
              "average_accuracy": {"reproduced": ran["average_accuracy"], "committed": committed["average_accuracy"]},
              "task_id_accuracy": {"reproduced": ran["task_id_accuracy"], "committed": committed["task_id_accuracy"]},
              "timing": ran["timing"], "versions": ran["versions"], "committed_versions": committed.get("versions")}
    target = os.path.join(report_dir, benchmark, f"seed_{seed}", f"{method}__{recipe}.json")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w") as f:
        json.dump(report, f, indent=2)
    return report
