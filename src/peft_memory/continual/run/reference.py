"""Loading a finished run's task adapters, and checking them against the predictions the run recorded.

At the end of a run the trainer writes ``reference_predictions.safetensors``: for each task, a few test inputs and
the logits the trained model gave them under that task's adapter. :func:`verify_run` reloads the adapters with
:func:`load_run` (in any process that imported ``peft_memory``) and checks that the reloaded model gives the same
logits, bit for bit.
"""

from __future__ import annotations

import os

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

from .checkpoint import adapter_weights_path, check_adapter_weights, load_adapter_config
from .results import RunResults

REFERENCE_FILE = "reference_predictions.safetensors"


def save_reference_predictions(model, batches: dict[str, dict[str, torch.Tensor]], path: str) -> None:
    """Save ``{task: inputs}`` and the logits of ``model`` under each task's adapter to ``path`` (safetensors)."""
    tensors = {}
    with torch.no_grad():
        for task, inputs in batches.items():
            n = next(iter(inputs.values())).shape[0]
            logits = model(**inputs, adapter_names=[task] * n).logits
            tensors[f"{task}.logits"] = logits.detach().cpu().contiguous()
            tensors.update({f"{task}.input.{k}": v.detach().cpu().contiguous() for k, v in inputs.items()})
    save_file(tensors, path)


def saved_adapters(output_dir: str, results: RunResults | None = None) -> list[str]:
    """The task adapters saved in a run's folder, in training order (``joint`` last)."""
    results = results or RunResults.load(output_dir)
    order = [*results.task_names, "joint"]
    names = [n for n in os.listdir(output_dir) if os.path.isfile(os.path.join(output_dir, n, "adapter_config.json"))]
    return sorted((n for n in names if n in order), key=order.index)


def load_run(output_dir: str, tasks: list[str] | None = None, base_model=None) -> PeftModel:
    """Load a run's task adapters onto a fresh base model with ``PeftModel.from_pretrained`` + ``load_adapter``.

    Args:
        output_dir: the run's folder (``results.json`` and one adapter folder per task).
        tasks: the adapters to load (any subset); default: every saved task adapter.
        base_model: the base model; default: the run's own (``--model``, with its pre-processing hooks), from the
            arguments saved in ``results.json``. A given one gets the run's ``--head_pooling``.

    Raises:
        FileNotFoundError / ValueError: a missing or corrupted ``adapter_model.safetensors`` (pickled weights are
            never loaded).
    """
    import peft_memory  # noqa: F401  (registers the peft types)

    results = RunResults.load(output_dir)
    tasks = tasks if tasks is not None else saved_adapters(output_dir, results)
    if base_model is None:
        from .arguments import ContinualArguments
        from .loading import load_model_and_pipeline

        num_labels = max(len(t.label_names) for t in results.tasks)  # TaskSequence.max_task_classes
        base_model, _ = load_model_and_pipeline(ContinualArguments(**results.config), num_labels,
                                                results.data.get("modality"))
    else:  # the classifier must read the feature the heads were trained on
        from ...pooling import set_head_pooling

        set_head_pooling(base_model, results.config.get("head_pooling", "pooler"))
    for name in tasks:  # safetensors only, checked before PEFT could fall back to a pickled adapter_model.bin
        load_adapter_config(os.path.join(output_dir, name))  # errors name the file (a truncated or edited config)
        adapter_weights_path(os.path.join(output_dir, name))
    model = None
    for name in tasks:
        folder = os.path.join(output_dir, name)
        try:
            if model is None:
                model = PeftModel.from_pretrained(base_model, folder, adapter_name=name)
            else:
                model.load_adapter(folder, adapter_name=name)
        except ValueError as err:  # e.g. an edited adapter_config.json that no longer fits the base model
            raise ValueError(f"{folder}: the adapter cannot be loaded onto the base model: {err} (if its "
                             f"adapter_config.json was edited, restore it, or delete {folder} and the later task "
                             "folders and run peft-memory train --resume to train them again)") from err
    for name in tasks:  # strictly: every weight the adapter has, no other, all finite (PEFT only warns)
        check_adapter_weights(model, name, os.path.join(output_dir, name))
    return model.eval()


def read_reference(output_dir: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The reference predictions of a finished run and the adapters they name, checked against the run.

    Raises:
        FileNotFoundError: the run has no reference (it did not finish).
        ValueError: the run is half-finished, the file is corrupted, names adapters that are not the run's, misses a
            task's logits or inputs, holds non-finite logits, or names a task whose folder was deleted.
    """
    from safetensors import SafetensorError

    results = RunResults.load(output_dir)
    if results.tasks_completed < len(results.tasks):
        raise ValueError(f"{output_dir} is a half-finished run ({results.tasks_completed} of {len(results.tasks)} "
                         "tasks): finish it with `peft-memory train ... --resume` before verifying it.")
    path = os.path.join(output_dir, REFERENCE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: it is written when a run's last task is done; finish the run "
                                "with `peft-memory train ... --resume`.")
    try:
        ref = load_file(path)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is corrupted or truncated ({err}); `peft-memory train ... --resume` on the "
                         "finished run writes it again.") from err
    tasks = sorted({k.split(".")[0] for k in ref})
    unknown = [t for t in tasks if t not in (*results.task_names, "joint")]
    if unknown:
        raise ValueError(f"{path} names {unknown}, which are not tasks of this run ({results.task_names}): the file "
                         "belongs to another run.")
    for task in tasks:
        logits = ref.get(f"{task}.logits")
        if logits is None or not any(k.startswith(f"{task}.input.") for k in ref):
            raise ValueError(f"{path} lacks the logits or inputs of {task!r}: it was not written by peft-memory.")
        if not logits.is_floating_point() or not torch.isfinite(logits).all():
            raise ValueError(f"{path} holds non-finite logits for {task!r}: it was changed after the run.")
        if not os.path.isfile(os.path.join(output_dir, task, "adapter_config.json")):
            raise ValueError(f"{os.path.join(output_dir, task)} is missing: the run's adapter of {task!r} was "
                             "deleted; restore it, or train it again with `peft-memory train ... --resume`.")
    return ref, tasks


def verify_run(output_dir: str, model: PeftModel | None = None) -> dict[str, float]:
    """Max absolute logit difference per task between the saved reference and the reloaded adapters
    (:func:`read_reference` checks the file against the run first)."""
    ref, tasks = read_reference(output_dir)
    model = model or load_run(output_dir, tasks)
    diffs = {}
    with torch.no_grad():
        for task in tasks:
            inputs = {k.split(".input.")[1]: v for k, v in ref.items() if k.startswith(f"{task}.input.")}
            n = next(iter(inputs.values())).shape[0]
            logits = model(**inputs, adapter_names=[task] * n).logits
            diffs[task] = (logits - ref[f"{task}.logits"]).abs().max().item()
    return diffs
