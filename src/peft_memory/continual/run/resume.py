"""The trainer's side of ``--resume``: record a finished task, and reload an interrupted run's finished tasks.

The files and their guarantees (atomic writes, the one commit point, the RNG states) are
:mod:`~peft_memory.continual.run.checkpoint`'s; these two functions read and write them for a
:class:`~peft_memory.continual.run.trainer.ContinualTrainer`.
"""

from __future__ import annotations

import os

import numpy as np
from accelerate.logging import get_logger

from . import checkpoint
from .checkpoint import run_config
from .results import nested
from .spec import resolved_config

logger = get_logger(__name__)


def write_task_state(trainer, k: int) -> None:
    """Record ``trainer.tasks[k]`` as finished: ``trainer_state.json`` with the matrices, timings and RNG states
    (main process; the other processes wait for it)."""
    if trainer.accelerator.is_main_process:
        checkpoint.write_state(trainer.args.output_dir, {
            "tasks_completed": k + 1, "task_names": [t.name for t in trainer.tasks],
            "config": run_config(trainer.args), "matrices": {key: nested(m) for key, m in trainer.matrices.items()},
            "pooled": trainer.pooled, "per_class": trainer.per_class, "timing": trainer.timing,
            "data_fingerprints": trainer.fingerprints})
    trainer.accelerator.wait_for_everyone()


def reload_finished_tasks(trainer) -> int:
    """Reload the finished tasks of an interrupted run in ``trainer.args.output_dir``; returns how many there are.

    A finished task whose folder was deleted is trained again, with every task after it.

    Raises:
        ValueError: if the interrupted run had other arguments or tasks, or a finished adapter's weights are
            corrupted, incomplete, non-finite or do not match its ``adapter_config.json``
            (:func:`~peft_memory.continual.run.checkpoint.check_adapter_weights`).
        FileNotFoundError: if a finished task's ``adapter_model.safetensors`` is missing.
    """
    out, tasks = trainer.args.output_dir, trainer.tasks
    state = checkpoint.read_state(out)
    if state is None:
        logger.info(f"--resume: no finished task in {out}; starting from the first task.")
        return 0
    state = {**state, "config": resolved_config(state["config"])}  # a run of an earlier version: resolved alike
    checkpoint.check_resumable(state, trainer.args, [t.name for t in tasks], trainer.fingerprints)
    done = state["tasks_completed"]
    deleted = next((k for k, t in enumerate(tasks[:done]) if not os.path.isdir(os.path.join(out, t.name))), None)
    if deleted is not None:  # the user deleted a finished task's folder (the fix for a damaged adapter)
        logger.warning(f"--resume: {tasks[deleted].name} is missing from {out}; it and the "
                       f"{done - deleted - 1} finished tasks after it are trained again.")
        done = deleted
    device = trainer.accelerator.device
    for task in tasks[:done]:
        folder = os.path.join(out, task.name)
        trainer.add_adapter(task)
        checkpoint.load_adapter_weights(trainer.model, task.name, folder, device)
        trainer.method.load_extras(trainer.model, task, folder, device)
        trainer.load_statistics(task, folder)
    if trainer.model is not None:
        trainer.model.eval()
    trainer.matrices = {k: np.array(v, dtype=float) for k, v in state["matrices"].items()}
    trainer.pooled, trainer.timing = state["pooled"], state["timing"]
    trainer.per_class = state.get("per_class", {})  # a state written before the field existed
    if deleted is not None:
        for m in trainer.matrices.values():
            m[:, trainer.column(deleted):] = np.nan
        trainer.timing = {k: v[:deleted] for k, v in trainer.timing.items()}
    checkpoint.restore_run_rng(out, state)
    logger.info(f"--resume: {done} of {len(tasks)} tasks finished in {out}; continuing with "
                + (tasks[done].name if done < len(tasks) else "nothing (the run is complete)") + ".")
    return done
