"""Growing a finished run by new tasks: ``peft-memory train --continue_from RUN --dataset NEW --num_tasks k``.

The run's method, model and inference settings carry over (a flag that contradicts them is an error naming it);
the new data become ``k`` tasks named after the run's last one, their classes numbered after the run's. Growing is
resuming a longer sequence whose first tasks are finished: the grown run's ``trainer_state.json`` lists the run's
tasks as done (their adapters, class statistics and keys are read, never written again) and the new ones to train,
so a crash while growing continues with ``--resume``. Into another ``--output_dir``, the run's task folders are
copied there first and the run itself is left untouched.

The old tasks' test sets are read again from the data the run recorded; where they are gone, their cells stay empty
(``null`` in ``results.json``, which lists them under ``data.tasks_without_test_data``) and the summary metrics
cover the tasks that have test data.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import asdict, fields

import numpy as np

from ..data.tasks import Task, TaskSequence
from . import checkpoint
from .arguments import ContinualArguments
from .loading import load_sequence
from .results import RunResults
from .spec import resolved_config

#: Settings that describe the new data (they may differ from the run's).
DATA_SETTINGS = ("benchmark", "dataset", "dataset_config_name", "text_column", "image_column", "label_column",
                 "num_tasks", "classes_per_task", "class_order", "test_split", "test_size", "order",
                 "train_per_class", "test_per_class", "wordnet_path", "fashion_mnist_path", "augment")
#: Settings of how each task trains (given ones apply to the new tasks; the run's otherwise).
TRAINING_SETTINGS = ("seed", "num_epochs", "batch_size", "gradient_accumulation_steps", "eval_batch_size",
                     "learning_rate", "lr_scheduler_type", "warmup_ratio", "key_learning_rate", "finetune_learning_rate",
                     "weight_decay", "max_grad_norm", "max_steps_per_task", "mixed_precision",
                     "dataloader_num_workers", "evaluate_on")
#: What never carries over: where the grown run goes, how this process runs.
OWN_SETTINGS = ("output_dir", "continue_from", *checkpoint.EXECUTION_ONLY)


def grown_arguments(args: ContinualArguments) -> tuple[ContinualArguments, RunResults]:
    """The grown run's arguments: the finished run's (``args.continue_from``) method, model and inference settings,
    ``args``' data, its training settings where given, and the output folder (default: the run's own).

    Raises:
        ValueError: if the run is not finished, its method cannot grow (one joint model), or ``args`` contradicts
            a setting that carries over (each named, with the run's value).
        FileNotFoundError: if ``continue_from`` holds no ``results.json``.
    """
    run = args.continue_from
    results = RunResults.load(run)
    if results.tasks_completed < len(results.tasks):
        raise ValueError(f"--continue_from {run}: the run finished {results.tasks_completed} of {len(results.tasks)} "
                         "tasks; finish it first (peft-memory train ... --resume), then grow it.")
    old = resolved_config(results.config)
    if old["method"] in ("joint", "joint_full"):
        raise ValueError(f"--continue_from {run}: {old['method']} trains one model on every class at once; it has "
                         "no tasks to add. Train it again on all the data.")
    defaults = asdict(ContinualArguments())
    given = {f.name: getattr(args, f.name) for f in fields(ContinualArguments)
             if getattr(args, f.name) != defaults[f.name]}
    carried = [f.name for f in fields(ContinualArguments)
               if f.name not in (*DATA_SETTINGS, *TRAINING_SETTINGS, *OWN_SETTINGS)]
    conflicts = [k for k in carried if k in given and given[k] != old.get(k)]
    if conflicts:
        diffs = ", ".join(f"--{k} {given[k]!r} (the run's: {old.get(k)!r})" for k in conflicts)
        raise ValueError(f"--continue_from {run}: the new tasks train and are read as the run's were; {diffs}. Drop "
                         "those flags, or train a new run.")
    merged = {**{k: old[k] for k in carried if k in old},
              **{k: given.get(k, old.get(k, defaults[k])) for k in TRAINING_SETTINGS},
              **{k: getattr(args, k) for k in (*DATA_SETTINGS, *OWN_SETTINGS)}}
    if "output_dir" not in given:
        merged["output_dir"] = run
    return ContinualArguments(**merged), results


def grown_sequence(args: ContinualArguments, results: RunResults) -> tuple[TaskSequence, list[str]]:
    """The run's tasks (their test sets read again where their data still load) followed by the new data's tasks,
    renamed ``task_<T>``... and numbered after the run's classes; also the old tasks whose test data are gone.

    Raises:
        ValueError: if a new class has the name of one of the run's classes (names identify classes).
    """
    new = load_sequence(args)
    old_names = global_label_names(results)
    clash = sorted(set(old_names) & set(new.global_label_names))
    if clash:
        raise ValueError(f"--continue_from: the new data's classes {clash} are classes of the run already; a grown "
                         "run adds new classes (rename them, or leave them out with --class_order).")
    offset, first = len(old_names), len(results.tasks)
    tasks = [Task(f"task_{first + i}", t.label_names, t.train, t.test, [offset + g for g in t.global_labels])
             for i, t in enumerate(new.tasks)]
    old, missing = _old_tasks(results)
    return (TaskSequence(f"{results.benchmark}+{new.name}", [*old, *tasks],
                         [*old_names, *new.global_label_names],
                         {**new.description, "grown_from": results.benchmark, "tasks_without_test_data": missing}),
            missing)


def global_label_names(results: RunResults) -> list[str]:
    """The run's classes by global id (a class of several tasks, a shared label space, once)."""
    names = {g: n for t in results.tasks for g, n in zip(t.global_labels, t.label_names)}
    return [names[g] for g in sorted(names)]


def _old_tasks(results: RunResults) -> tuple[list[Task], list[str]]:
    """The run's tasks without training data, with their test sets from the data the run recorded (``None``, and
    named in the second list, where those data no longer load or no longer match)."""
    known = {f.name for f in fields(ContinualArguments)}
    config = {k: v for k, v in resolved_config(results.config).items() if k in known}
    try:
        tests = {t.name: t for t in load_sequence(ContinualArguments(**config)).tasks}
    except (OSError, ValueError, ImportError, ConnectionError) as err:
        warnings.warn(f"the run's test data ({config.get('dataset') or config.get('benchmark')}) do not load ({err}); "
                      "its tasks' accuracy cells stay empty.", stacklevel=3)
        tests = {}
    out, missing = [], []
    for record in results.tasks:
        test = tests.get(record.name)
        if test is None or test.label_names != record.label_names:
            missing.append(record.name)
        out.append(Task(record.name, record.label_names, None, None if test is None or record.name in missing
                        else test.test, record.global_labels))
    return out, missing


def start_growing(args: ContinualArguments, results: RunResults, task_names: list[str], main_process: bool) -> None:
    """Make ``args.output_dir`` hold the finished run as the first tasks of the grown one (main process): copy the
    run's task folders there if it is another folder, and write a ``trainer_state.json`` that lists them as done
    (their matrices, timings and the current RNG states), unless a grown run's state is there already (a crash
    while growing: it continues from there)."""
    out, run = args.output_dir, args.continue_from
    state = checkpoint.read_state(out)
    if not main_process or (state is not None and state["task_names"] == task_names):
        return
    done = len(results.tasks)
    if os.path.abspath(out) != os.path.abspath(run):
        for record in results.tasks:
            target = os.path.join(out, record.name)
            if not os.path.exists(target):
                shutil.copytree(os.path.join(run, record.name), target)
    size = len(task_names)
    matrices = {}
    for key, saved in (("cil", results.accuracy_matrix), ("til", results.til_accuracy_matrix),
                       ("task_id", results.task_id_accuracy_matrix)):
        grown = np.full((size, size), np.nan)
        grown[:done, :done] = np.array([[np.nan if v is None else v for v in row] for row in saved], dtype=float)
        matrices[key] = [[None if np.isnan(x) else float(x) for x in row] for row in grown]
    checkpoint.write_state(out, {"tasks_completed": done, "task_names": task_names,
                                 "config": checkpoint.run_config(args), "matrices": matrices,
                                 "pooled": {"cil": results.cil_accuracy, "til": results.til_accuracy,
                                            "task_id": results.task_id_accuracy},
                                 "timing": results.timing})
