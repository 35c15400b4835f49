"""Crash-safe state of a continual run: what ``peft-memory train --resume`` continues from.

After each finished task the trainer's main process writes, each file through a temporary name and a rename (a
file is either its previous or its new version, never half-written, whenever the process dies):

1. the task's adapter folder (``ContinualTrainer.save_task``),
2. ``results.json`` and the heatmap,
3. ``trainer_state.json``: the tasks finished, the accuracy matrices so far, timings, the run's arguments and the
   torch (and CUDA), NumPy and Python RNG states at the end of the task.

A task counts as finished once ``trainer_state.json`` lists it: its rename is the one commit point (runs written
before the RNG states moved into it keep them in ``rng_state.safetensors``, still read). ``--resume`` reloads the
finished tasks' adapters (safetensors only, checked strictly), restores the matrices and the RNG states and continues with the next task, so the resumed run's
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
from safetensors.torch import load_file

STATE_FILE = "trainer_state.json"
RNG_FILE = "rng_state.safetensors"  # RNG states of runs written before they moved into STATE_FILE
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: The value a run recorded before a flag existed had, where it differs from the flag's default today (a run from
#: before ``--head_pooling`` classified BERT's pooler output; ``auto`` now picks MiniLM's mean pooling).
LEGACY_VALUES = {"head_pooling": "pooler", "recipe": "paper"}
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


def read_json(path: str, fix: str):
    """The JSON in ``path``.

    Raises:
        ValueError: naming ``path`` and ``fix`` if the file cannot be read or is not JSON (truncated, edited by hand).
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as err:
        raise ValueError(f"{path} cannot be read ({err.strerror}); {fix}.") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is corrupted or truncated, not valid JSON ({err}); {fix}.") from err


def atomic_write_json(obj, path: str) -> None:
    """Write JSON to ``path`` atomically (:func:`write_atomically`)."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    write_atomically(path, write)


def run_config(args) -> dict:
    """The run's arguments as recorded in ``results.json`` and checked on resume (execution-only ones left out)."""
    return {k: v for k, v in asdict(args).items() if k not in EXECUTION_ONLY}


#: The file every run writes as it starts: its resolved arguments, which ``peft-memory train --config`` reads back.
RUN_CONFIG_FILE = "run.yaml"


def write_run_config(out: str, args) -> str:
    """Write ``out/run.yaml``: :func:`run_config` of the resolved ``args`` as YAML (atomically); returns its path.
    ``peft-memory train --config out/run.yaml`` runs the same run again (flags on the command line override it)."""
    import yaml

    path = os.path.join(out, RUN_CONFIG_FILE)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("# peft-memory train --config this-file reproduces this run; command-line flags override it.\n")
            yaml.safe_dump(run_config(args), f, sort_keys=False)

    write_atomically(path, write)
    return path


#: Keys every ``trainer_state.json`` has.
STATE_KEYS = ("tasks_completed", "task_names", "config", "matrices", "pooled", "timing")


def read_state(out: str) -> dict | None:
    """``trainer_state.json`` of ``out`` as a dict, or ``None`` if there is none.

    Raises:
        ValueError: naming the file and the fix if it is not JSON or lacks a key of :data:`STATE_KEYS`.
    """
    path = os.path.join(out, STATE_FILE)
    if not os.path.isfile(path):
        return None
    fix = ("pass --overwrite_output_dir to start the run again (its finished adapters are lost), or another "
           "--output_dir")
    state = read_json(path, fix)
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path} lacks {missing}: it was not written by peft-memory train, or was edited; {fix}.")
    return state


def write_state(out: str, state: dict) -> None:
    """Write ``trainer_state.json`` with the RNG states inside: ONE atomic rename commits a finished task (a kill at
    any moment leaves the previous commit or the new one, never a mix of states)."""
    atomic_write_json({**state, "rng": rng_state()}, os.path.join(out, STATE_FILE))


def check_resumable(state: dict, args, task_names: list[str], fingerprints: dict[str, str] | None = None) -> None:
    """Raise ``ValueError`` naming every argument (or the task list) that differs from the interrupted run, or the
    tasks whose data changed since (``fingerprints``, :func:`~..data.tasks.data_fingerprint`; a state written
    before they were recorded is not checked)."""
    saved, now = {**LEGACY_VALUES, **state["config"]}, run_config(args)
    defaults = run_config(type(args)())  # a flag added after the run was written had its default value then
    changed = sorted(k for k in set(saved) | set(now)  # both exclude EXECUTION_ONLY
                     if k != "output_dir"  # the folder the state was read from: moved, relative or linked alike
                     and saved.get(k, defaults.get(k)) != now.get(k, defaults.get(k)))
    if changed:
        diffs = ", ".join(f"--{k} {saved.get(k)!r} (now {now.get(k)!r})" for k in changed)
        raise ValueError(f"--resume: output_dir={args.output_dir!r} holds a run with other arguments: {diffs}. "
                         "Resume with the same arguments, or pass --overwrite_output_dir to start again.")
    if state["task_names"] != task_names:
        raise ValueError(f"--resume: the interrupted run's tasks {state['task_names']} differ from this run's "
                         f"{task_names}; resume with the same benchmark and seed.")
    recorded = state.get("data_fingerprints") or {}
    changed = [t for t, f in (fingerprints or {}).items() if t in recorded and recorded[t] != f]
    if changed:
        raise ValueError(f"--resume: the data of {changed} changed since the run in output_dir={args.output_dir!r} "
                         "started (other samples, labels or order in the same files); resume with the data it was "
                         "trained on, or pass --overwrite_output_dir to train again on these.")


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


def check_adapter_weights(model, name: str, folder: str, weights: dict | None = None) -> None:
    """Check ``folder``'s saved weights against adapter ``name`` of the ``PeftModel``: every key the adapter has is
    there with its shape, no other key, every value finite. An edited ``adapter_config.json`` (other layers, target
    modules, labels or type) shows up here as missing or unused weights.

    Raises:
        FileNotFoundError / ValueError: see :func:`adapter_weights_path`; ``ValueError`` naming the folder, the
            offending keys and the fix otherwise.
    """
    from peft.utils import get_peft_model_state_dict

    if weights is None:  # callers that pass weights have renamed them already (load_adapter_weights)
        from ...tuners.soft_mask.model import rename_legacy_keys

        weights = rename_legacy_keys(load_file(adapter_weights_path(folder)))
    expected = get_peft_model_state_dict(model, adapter_name=name)
    problems = []
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = sorted(k for k in set(expected) & set(weights) if tuple(expected[k].shape) != tuple(weights[k].shape))
    nonfinite = sorted(k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all())
    for what, keys in (("missing", missing), ("not used by the adapter", unexpected),
                       ("of another shape", shapes), ("NaN or infinite", nonfinite)):
        if keys:
            problems.append(f"{len(keys)} weights {what} ({', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''})")
    if problems:
        raise ValueError(f"{folder}: the saved weights do not match adapter {name!r} as its adapter_config.json "
                         f"describes it: {'; '.join(problems)}. Delete {folder} (and the later task folders) and run "
                         "peft-memory train --resume to train it again, or restore the files that wrote it.")


#: ``adapter_config.json`` fields that decide which weights an adapter has (checked on resume).
CONFIG_FIELDS = ("peft_type", "target_modules", "layers_to_transform", "num_labels", "label_names")


def read_adapter_config(folder: str) -> dict:
    """``folder``'s ``adapter_config.json`` as a dict.

    Raises:
        ValueError: naming the file and the fix if it is missing, truncated or not a JSON object.
    """
    path = os.path.join(folder, "adapter_config.json")
    fix = (f"restore it, or delete {folder} (and the later task folders) and run peft-memory train --resume to train "
           "it again")
    saved = read_json(path, fix)
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds a {type(saved).__name__}, not an adapter config; {fix}.")
    return saved


def load_adapter_config(folder: str):
    """``folder``'s adapter config as its ``PeftConfig`` class (what ``PeftModel.from_pretrained`` would build).

    Raises:
        ValueError: naming the file and the fix if it cannot be read (:func:`read_adapter_config`) or its values are
            refused (an unknown ``peft_type``, ``num_labels`` that disagrees with ``label_names``, ...).
    """
    from peft import PeftConfig

    read_adapter_config(folder)
    try:
        return PeftConfig.from_pretrained(folder)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{os.path.join(folder, 'adapter_config.json')} does not describe a valid adapter ({err}); "
                         f"restore it, or delete {folder} (and the later task folders) and run peft-memory train "
                         "--resume to train it again.") from err


def check_adapter_config(folder: str, config) -> None:
    """Check that ``folder``'s ``adapter_config.json`` still describes the adapter the run's arguments make
    (``config``): :data:`CONFIG_FIELDS` must agree (an edited file would load other weights elsewhere).

    Raises:
        ValueError: naming the file, the fields that differ and the fix (also for a file that is not JSON).
    """
    saved = read_adapter_config(folder)
    made = config.to_dict()

    def norm(v):
        if isinstance(v, (list, tuple, set)):
            return sorted(map(str, v))
        return None if v is None else str(getattr(v, "value", v))  # PEFT's PeftType and ours are str enums

    diffs = [f"{k} {saved.get(k)!r} (the run's arguments give {getattr(made.get(k), 'value', made.get(k))!r})"
             for k in CONFIG_FIELDS
             if k in made and norm(saved.get(k)) != norm(made.get(k))]
    if diffs:
        path = os.path.join(folder, "adapter_config.json")
        raise ValueError(f"{path} was edited: {'; '.join(diffs)}. Restore it, or delete {folder} (and the later task "
                         "folders) and run peft-memory train --resume to train it again.")


def load_adapter_weights(model, name: str, folder: str, device) -> None:
    """Load ``folder``'s safetensors weights into the existing adapter ``name`` of the ``PeftModel``, strictly
    (:func:`check_adapter_config` and :func:`check_adapter_weights` first).

    Raises:
        FileNotFoundError / ValueError: see :func:`adapter_weights_path`, :func:`check_adapter_config` and
            :func:`check_adapter_weights`.
    """
    from peft.utils import set_peft_model_state_dict

    check_adapter_config(folder, model.peft_config[name])
    from ...tuners.soft_mask.model import rename_legacy_keys

    weights = rename_legacy_keys(load_file(adapter_weights_path(folder), device=str(device)))
    check_adapter_weights(model, name, folder, weights)
    set_peft_model_state_dict(model, weights, adapter_name=name)


# --------------------------------------------------------------------- RNG
def rng_state() -> dict:
    """torch CPU (and every CUDA device's), NumPy and Python RNG states as JSON-ready lists (no pickle)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state().tolist(), "numpy": [kind, keys.tolist(), int(pos), int(has_gauss),
                                                                 float(gauss)],
             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    """Restore the RNG states of :func:`rng_state`."""
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]][
            : torch.cuda.device_count()])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


#: What works when a run's RNG states are lost: only the states at the last finished task make the resumed run equal an
#: uninterrupted one, and no earlier states are kept (retraining a deleted task would need them).
RNG_FIX = ("the resumed run could not equal an uninterrupted one; pass --overwrite_output_dir to start the run again, "
           "or another --output_dir")


def restore_run_rng(out: str, state: dict) -> None:
    """Restore the RNG states of the run in ``out`` at its last finished task: from ``state["rng"]``, or from
    ``rng_state.safetensors`` for a run written before they moved into ``trainer_state.json``.

    Raises:
        ValueError: naming the file and the fix (:data:`RNG_FIX`) if the states are missing, corrupted or edited.
    """
    path = os.path.join(out, STATE_FILE if "rng" in state else RNG_FILE)
    try:
        if "rng" in state:
            restore_rng_state(state["rng"])
        else:
            load_rng_state(path)
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: the RNG states of the last finished task cannot be restored "
                         f"({type(err).__name__}: {err}); {RNG_FIX}.") from err


def load_rng_state(path: str) -> None:
    """Restore the RNG states of a run written before they moved into ``trainer_state.json``
    (``rng_state.safetensors``)."""
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
