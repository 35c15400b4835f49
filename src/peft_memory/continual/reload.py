"""Reload a finished run's task adapters into a fresh base model and check its predictions.

At the end of a run the trainer writes ``reference_predictions.safetensors``: for each task, a few test inputs and
the logits the trained model gave them under that task's adapter. :func:`verify_run` reloads the adapters (in any
process that imported ``peft_memory``) and checks that the reloaded model gives the same logits, bit for bit.
"""

from __future__ import annotations

import json
import os

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

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


def load_run(output_dir: str, tasks: list[str] | None = None, base_model=None) -> PeftModel:
    """Load a run's task adapters onto a fresh base model with ``PeftModel.from_pretrained`` + ``load_adapter``.

    Args:
        output_dir: the run's folder (``results.json`` and one adapter folder per task).
        tasks: the adapters to load (any subset); default: every finished task.
        base_model: the base model; default: loaded from the adapter config's ``base_model_name_or_path``.
    """
    import peft_memory  # noqa: F401  (registers the peft types)

    with open(os.path.join(output_dir, "results.json")) as f:
        results = json.load(f)
    if tasks is None:
        tasks = sorted(n for n in os.listdir(output_dir) if os.path.isfile(os.path.join(output_dir, n, "adapter_config.json")))
        order = [t["name"] for t in results["tasks"]] + ["joint"]
        tasks.sort(key=order.index)
    if base_model is None:  # the run's own base model and pre-processing hooks, from its saved arguments
        from .arguments import ContinualArguments
        from .loading import load_model_and_inputs

        args = ContinualArguments(**results["config"])
        num_labels = len({g for t in results["tasks"] for g in t["global_labels"]})
        base_model, _ = load_model_and_inputs(args, num_labels)
    model = PeftModel.from_pretrained(base_model, os.path.join(output_dir, tasks[0]), adapter_name=tasks[0])
    for name in tasks[1:]:
        model.load_adapter(os.path.join(output_dir, name), adapter_name=name)
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
