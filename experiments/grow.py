"""``python -m experiments grow``: the first tasks of a benchmark slice trained as a run, the rest added to it with
``--continue_from``, against the whole sequence trained at once (the committed default row of ``make compare``).

The slice's tasks are written as two csv datasets with their class order fixed (the same classes, samples and task
cuts as the benchmark's), so that only growing differs; the report goes to ``results/grow/``.
"""

from __future__ import annotations

import json
import os

import datasets

from peft_memory.continual.run.arguments import parse_arguments
from peft_memory.continual.run.launch import build_trainer
from peft_memory.continual.run.loading import load_sequence

from .reproduce import data_flags
from .tables import collect, setting_row


def export(tasks, folder: str) -> list[str]:
    """``tasks``' samples as ``folder/train.csv`` and ``test.csv`` (text, label name); returns the class order."""
    os.makedirs(folder, exist_ok=True)
    for split in ("train", "test"):
        rows = {"text": [], "label": []}
        for task in tasks:
            part = getattr(task, split)
            rows["text"] += part["text"]
            rows["label"] += [task.label_names[c] for c in part["label"]]
        datasets.Dataset.from_dict(rows).to_csv(os.path.join(folder, f"{split}.csv"))
    return [n for task in tasks for n in task.label_names]


def grow(benchmark: str = "wordnet", seed: int = 0, first: int = 3, output_dir: str = "outputs/grow",
         results_dir: str = "results/compare", report_dir: str = "results/grow") -> dict:
    """Train ``benchmark``'s first ``first`` tasks (seed ``seed``), grow the run by the others, compare its final
    accuracy with the committed row of the whole sequence trained at once."""
    flags = [*data_flags(benchmark), "--seed", str(seed)]
    sequence = load_sequence(parse_arguments(flags))
    root = os.path.join(output_dir, benchmark, f"seed_{seed}")
    size = len(sequence.tasks[0].label_names)
    keep = ("--model", "--num_epochs", "--batch_size", "--image_size", "--seed")  # the data are in the csv files
    data = [x for k, v in zip(flags[::2], flags[1::2]) if k in keep for x in (k, v)]
    runs = {}
    for part, tasks in (("first", sequence.tasks[:first]), ("rest", sequence.tasks[first:])):
        order = export(tasks, os.path.join(root, f"data_{part}"))
        argv = [*data, "--dataset", os.path.join(root, f"data_{part}"), "--classes_per_task", str(size),
                "--class_order", *order, "--output_dir", os.path.join(root, "run"), "--overwrite_output_dir"]
        if part == "rest":
            argv = [a for a in argv if a != "--overwrite_output_dir"] + ["--continue_from", os.path.join(root, "run")]
        trainer = build_trainer(parse_arguments(argv))
        runs[part] = trainer.run().to_json()
    committed = collect(results_dir, benchmark)[setting_row(trainer.spec.method.name, trainer.spec.inference)][seed]
    grown = runs["rest"]
    report = {"benchmark": benchmark, "seed": seed, "first_tasks": first, "setting": trainer.spec.inference.label,
              "grown": {k: grown[k] for k in ("average_accuracy", "task_id_accuracy", "accuracy_matrix")},
              "at_once": {k: committed[k] for k in ("average_accuracy", "task_id_accuracy", "accuracy_matrix")},
              "versions": grown["versions"]}
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, f"{benchmark}_seed_{seed}.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report
