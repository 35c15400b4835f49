"""Crash-safe state of a continual run: what ``peft-memory train --resume`` continues from.

After each finished task the trainer's main process writes, each file through a temporary name and a rename (a
file is either its previous or its new version, never half-written, whenever the process dies):

1. the task's adapter folder (``ContinualTrainer.save_task``),
2. ``results.json`` and the heatmap,
3. ``rng_state.safetensors``: the torch (and CUDA), NumPy and Python RNG states at the end of the task,
4. ``trainer_state.json``: the tasks finished, the accuracy matrices so far, timings and the run's arguments.

A task counts as finished once ``trainer_state.json`` lists it. ``--resume`` reloads the finished tasks' adapters
(safetensors only), restores the matrices and the RNG states and continues with the next task, so the resumed run's
``results.json`` equals an uninterrupted run's with the same seed (wall-clock ``timing`` aside).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import asdict

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"
RNG_FILE = "rng_state.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: arguments that change how a run executes, not what it computes: a resume may change them. (DataLoader workers are
#: not among them: augmentation draws its random numbers in the workers.)
EXECUTION_ONLY = ("resume", "overwrite_output_dir", "report_to", "push_to_hub", "verbose")


def write_atomically(path: str, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``: a reader (or a run killed
    at any moment) sees the previous file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(obj, path: str) -> None:
    """Write JSON to ``path`` atomically (:func:`write_atomically`)."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    write_atomically(path, write)


def run_config(args) -> dict:
    """The run's arguments as recorded in ``results.json`` and checked on resume (execution-only ones left out)."""
    return {k: v for k, v in asdict(args).items() if k not in EXECUTION_ONLY}


def prepare_output_dir(args) -> None:
    """Create ``args.output_dir`` and check that it is writable and not another run's folder.

    Raises:
        PermissionError: if the folder cannot be created or written (checked by writing a file, so it holds for root).
        ValueError: if it holds a run (``trainer_state.json``) and neither ``--resume`` nor ``--overwrite_output_dir``
            is given: its finished adapters are never overwritten by accident.
    """
    out = args.output_dir
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise PermissionError(f"output_dir={out!r} is not writable ({err.strerror or err}); pass a writable "
                              "--output_dir.") from err
    state = read_state(out)
    if state is not None and not (args.resume or args.overwrite_output_dir):
        raise ValueError(f"output_dir={out!r} already holds a run ({state['tasks_completed']} of "
                         f"{len(state['task_names'])} tasks finished); pass --resume to continue it, "
                         "--overwrite_output_dir to start it again, or another --output_dir.")


def read_state(out: str) -> dict | None:
    """``trainer_state.json`` of ``out`` as a dict, or ``None`` if there is none."""
    path = os.path.join(out, STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_state(out: str, state: dict) -> None:
    """Write the RNG states, then ``trainer_state.json`` (the commit point of a finished task)."""
    save_rng_state(os.path.join(out, RNG_FILE))
    atomic_write_json(state, os.path.join(out, STATE_FILE))


def check_resumable(state: dict, args, task_names: list[str]) -> None:
    """Raise ``ValueError`` naming every argument (or the task list) that differs from the interrupted run."""
    saved, now = state["config"], run_config(args)
    defaults = run_config(type(args)())  # a flag added after the run was written had its default value then
    changed = sorted(k for k in set(saved) | set(now)  # both exclude EXECUTION_ONLY
                     if saved.get(k, defaults.get(k)) != now.get(k, defaults.get(k)))
    if changed:
        diffs = ", ".join(f"--{k} {saved.get(k)!r} (now {now.get(k)!r})" for k in changed)
        raise ValueError(f"--resume: output_dir={args.output_dir!r} holds a run with other arguments: {diffs}. "
                         "Resume with the same arguments, or pass --overwrite_output_dir to start again.")
    if state["task_names"] != task_names:
        raise ValueError(f"--resume: the interrupted run's tasks {state['task_names']} differ from this run's "
                         f"{task_names}; resume with the same benchmark and seed.")


# ------------------------------------------------------------------ weights
def adapter_weights_path(folder: str) -> str:
    """Path of the adapter's safetensors weights in ``folder``, after checking that they are there and readable.

    Pickled weights (``adapter_model.bin``) are never loaded: unpickling can run code.

    Raises:
        FileNotFoundError: if ``adapter_model.safetensors`` is missing.
        ValueError: if its header cannot be read (truncated or corrupted file).
    """
    path = os.path.join(folder, ADAPTER_WEIGHTS)
    if not os.path.isfile(path):
        hint = (" (adapter_model.bin is there, but pickled weights are never loaded: unpickling can run code)"
                if os.path.exists(os.path.join(folder, "adapter_model.bin")) else "")
        raise FileNotFoundError(f"{path} is missing{hint}. Save the adapter with save_pretrained() (safetensors is "
                                "its default) or retrain the task.")
    check_safetensors(path, what="adapter weights")
    return path


def check_safetensors(path: str, what: str = "weights") -> None:
    """Raise ``ValueError`` with the fix if ``path`` is not a readable safetensors file."""
    try:
        with safe_open(path, framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{what} {path} are corrupted or truncated ({err}); save them again, or retrain the task "
                         "(delete its folder and run peft-memory train --resume).") from err


def load_adapter_weights(model, name: str, folder: str, device) -> None:
    """Load ``folder``'s safetensors weights into the existing adapter ``name`` of the ``PeftModel``.

    Raises:
        FileNotFoundError / ValueError: see :func:`adapter_weights_path`; ``ValueError`` also if the file holds
            weights that this adapter does not have (another method or base model).
    """
    from peft.utils import set_peft_model_state_dict

    weights = load_file(adapter_weights_path(folder), device=str(device))
    result = set_peft_model_state_dict(model, weights, adapter_name=name)
    unexpected = list(result.unexpected_keys)
    if unexpected:
        raise ValueError(f"{folder}: weights {unexpected[:3]} do not belong to adapter {name!r} of this model; "
                         "resume with the method and base model that wrote them.")


# --------------------------------------------------------------------- RNG
def save_rng_state(path: str) -> None:
    """torch CPU (and every CUDA device's), NumPy and Python RNG states in one safetensors file (no pickle)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    tensors["python"] = torch.tensor(internal, dtype=torch.int64)
    meta = {"numpy": json.dumps([kind, int(pos), int(has_gauss), float(gauss)]),
            "python": json.dumps([version, gauss_next])}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_rng_state(path: str) -> None:
    """Restore the RNG states written by :func:`save_rng_state`."""
    check_safetensors(path, what="RNG states")
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    kind, pos, has_gauss, gauss = json.loads(meta["numpy"])
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, gauss_next = json.loads(meta["python"])
    random.setstate((version, tuple(int(v) for v in tensors["python"].tolist()), gauss_next))
