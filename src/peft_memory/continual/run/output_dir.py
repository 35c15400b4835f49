"""The output folder of a run: created, checked writable, locked for the run's whole life, cleared of a killed
writer's litter, and, with ``--overwrite_output_dir``, emptied of the previous run as a whole before anything new is
written."""

from __future__ import annotations

import os
import shutil
import tempfile

from .checkpoint import RNG_FILE, STATE_FILE, read_state

LOCK_FILE = ".peft_memory.lock"
PID_FILE = ".peft_memory.pid"
#: Run-level files of a finished or interrupted run (besides its task folders).
RUN_FILES = ("results.json", "accuracy_matrix.png", "reference_predictions.safetensors", RNG_FILE, "README.md")
_LOCKS: dict = {}  # real path of a locked output folder -> its FileLock (held by this process)


def lock_output_dir(out: str) -> None:
    """Hold an exclusive lock on ``out`` (``filelock``: a lock file inside the folder) until
    :func:`release_output_dir` or the end of the process. The OS releases it when the process dies, so a killed run
    never blocks ``--resume``. Re-entrant within one process.

    Raises:
        ValueError: if another process holds it, naming the folder and that process.
    """
    from filelock import FileLock, Timeout

    key = os.path.realpath(out)
    lock = _LOCKS.get(key) or FileLock(os.path.join(key, LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            with open(os.path.join(key, PID_FILE)) as f:
                holder = f"pid {int(f.read().strip())}"
        except (OSError, ValueError):
            holder = "pid unknown"
        raise ValueError(f"output_dir={out!r} is in use by another running peft-memory process ({holder}); wait for "
                         "it to finish, stop it, or pass another --output_dir.") from None
    _LOCKS[key] = lock
    with open(os.path.join(key, PID_FILE), "w") as f:
        f.write(str(os.getpid()))


def release_output_dir(out: str) -> None:
    """Release this process's lock on ``out`` (no-op if it holds none)."""
    lock = _LOCKS.pop(os.path.realpath(out), None)
    if lock is not None:
        lock.release(force=True)


def remove_litter(out: str) -> list[str]:
    """Remove what a killed writer leaves in ``out`` (``.tmp-<task>-*`` folders, ``*.tmp`` files); call it with the
    folder locked. Returns the names removed."""
    removed = []
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        if name.startswith(".tmp-") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif name.endswith(".tmp") and os.path.isfile(path):
            os.remove(path)
        else:
            continue
        removed.append(name)
    return removed


def retire_run(out: str, task_names: list[str]) -> None:
    """``--overwrite_output_dir``: retire the run in ``out`` as a whole before anything new is written.
    ``trainer_state.json`` goes first (one unlink: from then on nothing of the old run is resumable), then its
    run-level files (:data:`RUN_FILES`) and its task folders (a symlinked one is unlinked, its target kept)."""
    if os.path.exists(os.path.join(out, STATE_FILE)):
        os.remove(os.path.join(out, STATE_FILE))
    for name in RUN_FILES:
        if os.path.isfile(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    for name in task_names:
        folder = os.path.join(out, name)
        if os.path.islink(folder):
            os.remove(folder)
        elif os.path.isdir(folder):
            shutil.rmtree(folder)


def prepare_output_dir(args, main_process: bool = True) -> None:
    """Create ``args.output_dir`` and check that it is writable; on the main process, lock it
    (:func:`lock_output_dir`), remove a killed run's litter and, with ``--overwrite_output_dir``, retire the run it
    holds (:func:`retire_run`).

    Raises:
        PermissionError: if the folder cannot be created or written (checked by writing a file, so it holds for root).
        ValueError: if another process holds the folder; if it holds a run (``trainer_state.json``) and neither
            ``--resume`` nor ``--overwrite_output_dir`` is given (its finished adapters are never overwritten by
            accident); if its ``trainer_state.json`` is unreadable and ``--overwrite_output_dir`` is not given.
    """
    out = args.output_dir
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise PermissionError(f"output_dir={out!r} is not writable ({err.strerror or err}); pass a writable "
                              "--output_dir.") from err
    if not main_process:
        return
    lock_output_dir(out)
    remove_litter(out)
    if args.overwrite_output_dir and not args.resume:
        try:
            names = (read_state(out) or {}).get("task_names", [])
        except ValueError:  # an unreadable state: start over all the same
            names = []
        retire_run(out, [n for n in names if isinstance(n, str) and n not in ("", ".", "..") and os.sep not in n])
        return
    state = read_state(out)
    if state is not None and not args.resume:
        raise ValueError(f"output_dir={out!r} already holds a run ({state['tasks_completed']} of "
                         f"{len(state['task_names'])} tasks finished); pass --resume to continue it, "
                         "--overwrite_output_dir to start it again, or another --output_dir.")
