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


def verify_run(output_dir: str, model: PeftModel | None = None) -> dict[str, float]:
    """Max absolute logit difference per task between the saved reference and the reloaded adapters."""
    ref = load_file(os.path.join(output_dir, REFERENCE_FILE))
    tasks = sorted({k.split(".")[0] for k in ref})
    model = model or load_run(output_dir, tasks)
    diffs = {}
    with torch.no_grad():
        for task in tasks:
            inputs = {k.split(".input.")[1]: v for k, v in ref.items() if k.startswith(f"{task}.input.")}
            n = next(iter(inputs.values())).shape[0]
            logits = model(**inputs, adapter_names=[task] * n).logits
            diffs[task] = (logits - ref[f"{task}.logits"]).abs().max().item()
    return diffs
