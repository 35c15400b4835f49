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
        num_labels = max(len(t["label_names"]) for t in results["tasks"])  # TaskSequence.max_task_classes
        base_model, _ = load_model_and_inputs(args, num_labels)
    from .checkpoint import adapter_weights_path

    for name in tasks:  # safetensors only, checked before PEFT could fall back to a pickled adapter_model.bin
        adapter_weights_path(os.path.join(output_dir, name))
    model = PeftModel.from_pretrained(base_model, os.path.join(output_dir, tasks[0]), adapter_name=tasks[0])
    for name in tasks[1:]:
        model.load_adapter(os.path.join(output_dir, name), adapter_name=name)
    return model.eval()


def load_task_keys(output_dir: str, tasks: list[str], dim: int):
    """The :class:`peft_memory.TaskKeys` saved beside a run's adapters (``lora`` runs), for
    ``prompt_id(model, inputs, tasks, keys=...)``. Raises ``FileNotFoundError`` if an adapter has no key."""
    from ..task_keys import TaskKeys

    keys = TaskKeys(dim)
    for name in tasks:
        keys.load(name, os.path.join(output_dir, name))
    return keys


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


EVALUATION_SETTINGS = ("task_id_mode", "task_id_batchwise", "task_id_shots", "eval_batch_size")


def evaluate_run(run_dir: str, output_dir: str, *, sequence=None, base_model=None, inputs=None, **settings) -> dict:
    """Re-evaluate a finished run's saved adapters under other evaluation settings, without training.

    Column ``j`` of every accuracy matrix is rebuilt with the adapters of tasks ``0..j`` only, which training never
    changes after their task: with the run's own settings this reproduces its ``results.json`` matrices exactly.
    Typical use: DualPrompt-Soft-TF adapters evaluated with Gradient-ID as well as Prompt-ID.

    Args:
        run_dir: the finished run (adapters and ``results.json``).
        output_dir: where the new ``results.json`` and heatmap go (the adapters stay in ``run_dir``).
        sequence, base_model, inputs: the run's task sequence, a fresh base model and its input pipeline; default:
            loaded from the run's saved arguments (``load_sequence``, ``load_model_and_inputs``).
        settings: any of :data:`EVALUATION_SETTINGS`.

    Raises:
        ValueError: for a setting that is not an evaluation setting (it would change the training).
    """
    from .arguments import ContinualArguments
    from .loading import load_model_and_inputs, load_sequence
    from .methods import get_method
    from .trainer import ContinualTrainer

    unknown = sorted(set(settings) - set(EVALUATION_SETTINGS))
    if unknown:
        raise ValueError(f"{unknown} are not evaluation settings; evaluate_run accepts {list(EVALUATION_SETTINGS)}.")
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    args = ContinualArguments(**{**results["config"], **settings, "output_dir": output_dir, "push_to_hub": None})
    method = get_method(args.method)
    if sequence is None:
        sequence = load_sequence(args)
    if base_model is None:
        base_model, inputs = load_model_and_inputs(args, sequence.max_task_classes)
    trainer = ContinualTrainer(base_model, sequence, method, inputs, args)
    trainer.notes["adapters_from"] = os.path.abspath(run_dir)
    names = [t.name for t in trainer.tasks[: results["tasks_completed"]]]
    trainer.model = load_run(run_dir, names, base_model=base_model)
    if method.task_keys:
        trainer.task_keys = load_task_keys(run_dir, names, base_model.config.hidden_size)
    columns = [len(sequence) - 1] if method.joint else range(results["tasks_completed"])
    for j in columns:
        trainer.evaluate_seen(j)
        out = trainer.write_results(j)
    return out

