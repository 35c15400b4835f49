"""The output folder of a run: created, checked writable, locked for the run's whole life, cleared of a killed
writer's litter, and, with ``--overwrite_output_dir``, emptied of the previous run as a whole before anything new is
written.

A run writes only its own names (:data:`OWN_FILES` and one folder per task) and never writes, replaces or deletes a
file it did not create: a folder that holds no run of ours but files under those names is refused before anything
is written, the project's root, the home folder and ``/`` are refused, and ``--overwrite_output_dir`` retires only
the run's own files, once the new run's data and model have loaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from .checkpoint import RNG_FILE, RUN_CONFIG_FILE, STATE_FILE, read_state

LOCK_FILE = ".peft_memory.lock"
PID_FILE = ".peft_memory.pid"
#: Run-level files of a finished or interrupted run (besides its task folders).
RUN_FILES = ("results.json", "accuracy_matrix.png", "confusion_matrix.png", "reference_predictions.safetensors",
             RNG_FILE, "README.md")
#: Every name a run writes at the top of its output folder, besides one folder per task.
OWN_FILES = (LOCK_FILE, PID_FILE, STATE_FILE, RUN_CONFIG_FILE, *RUN_FILES)
#: Entries that mark a folder as somebody's project or a single adapter, never a run's output folder.
PROJECT_MARKERS = (".git", "pyproject.toml", "setup.py", "adapter_config.json")
_LOCKS: dict = {}  # real path of a locked output folder -> its FileLock (held by this process)


def lock_output_dir(out: str) -> None:
    """Hold an exclusive lock on ``out`` (``filelock``: a lock file inside the folder) until
    :func:`release_output_dir` or the end of the process. The OS releases it when the process dies, so a killed run
    never blocks ``--resume``. Re-entrant within one process.

    Raises:
        ValueError: if another process holds it, naming the folder and that process; if the lock or pid file is a
            symbolic link (writing it would write wherever the link points).
    """
    from filelock import FileLock, Timeout

    key = os.path.realpath(out)
    links = [n for n in (LOCK_FILE, PID_FILE) if os.path.islink(os.path.join(key, n))]
    if links:  # writing through them would write wherever they point
        raise ValueError(f"output_dir={out!r} holds {links} as symbolic links; a run never writes through a link out "
                         "of its folder: remove them.")
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
    fd = os.open(os.path.join(key, PID_FILE), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                 0o644)
    with os.fdopen(fd, "w") as f:
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


def refuse_unsafe_output_dir(out: str) -> None:
    """Refuse an output folder that is ``/``, the home folder, or holds a project or an adapter
    (:data:`PROJECT_MARKERS`): a run writes there and ``--overwrite_output_dir`` deletes there.

    Raises:
        ValueError: naming the folder, what it is, and the fix.
    """
    real = os.path.realpath(out)
    what = {os.path.realpath(os.sep): "the root folder", os.path.realpath(os.path.expanduser("~")): "your home folder"}
    found = what.get(real) or next((f"a folder holding {m}" for m in PROJECT_MARKERS
                                    if os.path.lexists(os.path.join(real, m))), None)
    if found:
        raise ValueError(f"output_dir={out!r} is {found}, not a run's own folder: a run writes there and "
                         "--overwrite_output_dir deletes there. Pass a folder of its own, e.g. "
                         f"--output_dir {os.path.join(out, 'outputs', 'my_run')}.")


def _ours(out: str, name: str) -> bool:
    """Whether ``out/name`` was written by a run of ours (for files whose name alone does not tell)."""
    path = os.path.join(out, name)
    try:
        if name == RUN_CONFIG_FILE:
            import yaml

            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
            return isinstance(data, dict) and {"method", "output_dir", "seed"} <= set(data)
        if name == "README.md":  # the model card names the library
            with open(path, encoding="utf-8", errors="replace") as f:
                return "peft_memory" in f.read(4096)
    except (OSError, ValueError):
        return False
    return True


def foreign_entries(out: str, task_names: list[str]) -> list[str]:
    """The entries of ``out`` that a run with ``task_names`` would write but that no run of ours wrote.

    ``out`` holds a run of ours when it has ``trainer_state.json`` or a ``run.yaml`` of ours (a run killed before its
    first task finished); then every name of the run's is its own (a ``README.md`` only if it is our model card).
    Otherwise every existing file or folder under one of those names is somebody else's.
    """
    names = [n for n in (*OWN_FILES, *task_names) if n not in (LOCK_FILE, PID_FILE)]
    present = [n for n in names if os.path.lexists(os.path.join(out, n))]
    if os.path.lexists(os.path.join(out, STATE_FILE)) or (
            os.path.isfile(os.path.join(out, RUN_CONFIG_FILE)) and _ours(out, RUN_CONFIG_FILE)):
        return [n for n in present if n == "README.md" and not _ours(out, n)]
    return [n + ("/" if os.path.isdir(os.path.join(out, n)) else "") for n in present]


def retire_run(out: str, task_names: list[str]) -> None:
    """``--overwrite_output_dir``: retire the run in ``out`` as a whole before anything new is written.
    ``trainer_state.json`` goes first (one unlink: from then on nothing of the old run is resumable), then its
    run-level files (:data:`RUN_FILES`) and its task folders (a symlinked one is unlinked, its target kept)."""
    if os.path.exists(os.path.join(out, STATE_FILE)):
        os.remove(os.path.join(out, STATE_FILE))
    for name in RUN_FILES:
        if os.path.isfile(os.path.join(out, name)) and (name != "README.md" or _ours(out, name)):
            os.remove(os.path.join(out, name))
    for name in task_names:
        folder = os.path.join(out, name)
        if os.path.islink(folder):
            os.remove(folder)
        elif os.path.isdir(folder):
            shutil.rmtree(folder)


def prepare_output_dir(args, main_process: bool = True, task_names: list[str] | None = None) -> None:
    """Create ``args.output_dir`` and check that it is safe (:func:`refuse_unsafe_output_dir`) and writable; on the
    main process, lock it (:func:`lock_output_dir`) and remove a killed run's litter. Given the run's ``task_names``
    (once its data and model have loaded), refuse names that somebody else's files hold (:func:`foreign_entries`)
    and, with ``--overwrite_output_dir``, retire the run it holds (:func:`retire_run`).

    Raises:
        PermissionError: if the folder cannot be created or written (checked by writing a file, so it holds for root).
        ValueError: for an unsafe folder; if another process holds the folder; if it holds a run
            (``trainer_state.json``) and neither ``--resume`` nor ``--overwrite_output_dir`` is given (its finished
            adapters are never overwritten by accident); if its ``trainer_state.json`` is unreadable and
            ``--overwrite_output_dir`` is not given; if files of somebody else's hold a name the run writes.
    """
    out = args.output_dir
    refuse_unsafe_output_dir(out)
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
    overwrite = args.overwrite_output_dir and not args.resume
    try:
        state = read_state(out)
    except ValueError:
        if not overwrite:
            raise
        state = None  # an unreadable state: --overwrite_output_dir starts over all the same
    if state is not None and not args.resume and not overwrite:
        raise ValueError(f"output_dir={out!r} already holds a run ({state['tasks_completed']} of "
                         f"{len(state['task_names'])} tasks finished); pass --resume to continue it, "
                         "--overwrite_output_dir to start it again, or another --output_dir.")
    if task_names is None:  # the launcher's call, before anything loads: nothing is retired yet
        return
    foreign = foreign_entries(out, task_names)
    if foreign:
        raise ValueError(f"output_dir={out!r} holds {foreign}, which no peft-memory run wrote there and which this run "
                         "would write; nothing was changed. Move them, or pass another --output_dir "
                         "(--overwrite_output_dir only ever retires a run of ours).")
    if overwrite:
        old = (state or {}).get("task_names", [])
        retire_run(out, [n for n in (*old, *task_names) if isinstance(n, str) and n not in ("", ".", "..")
                         and os.sep not in n])
