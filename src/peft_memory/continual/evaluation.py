"""Evaluation of one task's test set after training task ``j``: task-incremental accuracy (task given),
class-incremental accuracy (task inferred per sample) and task-identity accuracy."""

from __future__ import annotations

import torch

from ..task_identity import gradient_id, prompt_id
from .tasks import Task


def infer_tasks(model, inputs, names: list[str], mode: str, per_sample: bool, num_shots: int | None,
                keys=None, widths: list[int] | None = None) -> torch.Tensor:
    """Task index into ``names`` for each sample, ``(batch,)``.

    ``gradient_id``: SupSup one-shot entropy gradient (:func:`peft_memory.gradient_id`). ``prompt_id``: DualPrompt
    key matching (:func:`peft_memory.prompt_id`). ``max_logit``: the task
    whose head gives the largest logit (for heads over a frozen backbone this is the argmax of the concatenated
    classifier). ``per_sample=False`` gives one id per batch: Gradient-ID on ``num_shots`` samples, else a
    majority vote (the reference Prompt-ID); such results are labelled batch-wise. ``keys``: a
    :class:`peft_memory.TaskKeys` for adapters without their own keys; ``widths``: each task's number of classes
    (its logits are the first ``widths[t]`` columns).
    """
    if mode == "gradient_id":
        return gradient_id(model, inputs, names, per_sample=per_sample, num_shots=num_shots)
    if mode == "max_softmax":
        raise ValueError("task_id_mode='max_softmax' reads every head from one forward: use "
                         "evaluate_concatenated_batch (memory tokens).")
    if mode == "prompt_id":
        return prompt_id(model, inputs, names, per_sample=per_sample, keys=keys)
    if mode != "max_logit":
        raise ValueError(f"task_id_mode={mode!r} is unknown; use 'gradient_id', 'prompt_id' or 'max_logit'.")
    batch = next(iter(inputs.values())).shape[0]
    widths = widths or [None] * len(names)
    scores = torch.stack(
        [model(**inputs, adapter_names=[n] * batch).logits[:, :w].max(dim=-1).values for n, w in zip(names, widths)],
        dim=-1,
    )
    task = scores.argmax(dim=-1).cpu()
    if not per_sample:
        task = torch.full_like(task, int(task.mode().values))
    return task


def evaluate_concatenated_batch(model, batch: dict, labels: torch.Tensor, k: int, tasks: list[Task],
                                per_sample: bool = True) -> dict[str, torch.Tensor]:
    """:func:`evaluate_batch` for memory tokens: ONE forward with every seen task's adapter taking part gives every
    head's logits (``task_logits``). Task-incremental: the true task's head. Class-incremental rule: the most
    confident head, ``argmax_t max softmax(logits_t)``, per sample (``per_sample=False``: the batch's majority,
    labelled batch-wise)."""
    names = [t.name for t in tasks]
    with torch.no_grad(), model.base_model.concatenated(names):
        per_task = model(**batch).task_logits
    logits = [per_task[n].float().cpu() for n in names]
    confidence = torch.stack([lg.softmax(dim=-1).max(dim=-1).values for lg in logits], dim=-1)  # (batch, T)
    inferred = confidence.argmax(dim=-1)
    if not per_sample:
        inferred = torch.full_like(inferred, int(inferred.mode().values))
    labels = labels.cpu()
    til_pred = logits[k].argmax(dim=-1)
    pred_local = torch.stack([lg.argmax(dim=-1) for lg in logits], dim=-1).gather(1, inferred[:, None])[:, 0]
    true_global = _global(tasks, torch.full_like(labels, k), labels)
    return {"til": til_pred == labels, "cil": _global(tasks, inferred, pred_local) == true_global,
            "task_id": inferred == k}


def _global(tasks: list[Task], task_index: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    return torch.tensor([tasks[t].global_labels[c] for t, c in zip(task_index.tolist(), local.tolist())])


def evaluate_batch(model, batch: dict, labels: torch.Tensor, k: int, tasks: list[Task], mode: str,
                   per_sample: bool = True, num_shots: int | None = None, keys=None) -> dict[str, torch.Tensor]:
    """Per-sample correctness on one test batch of task ``k`` with ``tasks`` (all seen) loaded as adapters.

    A task's logits are the first ``num_labels`` columns of the model's output under its adapter (``keys``: see
    :func:`infer_tasks`).

    Returns bool tensors ``til``, ``cil``, ``task_id`` of shape ``(batch,)``.
    """
    names = [t.name for t in tasks]
    labels = labels.cpu()
    task = tasks[k]
    n = labels.shape[0]
    with torch.no_grad():
        logits = model(**batch, adapter_names=[task.name] * n).logits[:, : task.num_labels]
    til_pred = logits.argmax(dim=-1).cpu()
    widths = [t.num_labels for t in tasks]
    inferred = infer_tasks(model, batch, names, mode, per_sample, num_shots, keys=keys, widths=widths)
    pred_task = inferred.clone()
    pred_local = til_pred.clone()
    wrong = inferred != k
    if wrong.any():  # only samples routed to another task need another forward
        idx = wrong.nonzero().squeeze(1)
        sub = {key: v[idx.to(v.device)] for key, v in batch.items()}
        with torch.no_grad():
            other = model(**sub, adapter_names=[names[t] for t in inferred[idx].tolist()]).logits.cpu()
        beyond = torch.arange(other.shape[-1]) >= torch.tensor(widths)[inferred[idx]].unsqueeze(1)
        pred_local[idx] = other.masked_fill(beyond, float("-inf")).argmax(dim=-1)  # within each row's task
    true_global = _global(tasks, torch.full_like(labels, k), labels)
    cil = _global(tasks, pred_task, pred_local) == true_global
    return {"til": til_pred == labels, "cil": cil, "task_id": inferred == k}


def evaluate_joint_batch(model, batch: dict, labels: torch.Tensor, task: Task) -> dict[str, torch.Tensor]:
    """The same three measures for one adapter trained jointly over the global label space."""
    with torch.no_grad():
        logits = model(**batch).logits.cpu()
    true_global = torch.tensor(task.global_labels)[labels.cpu()]
    pred = logits.argmax(dim=-1)
    own = torch.tensor(task.global_labels)
    til_pred = own[logits[:, own].argmax(dim=-1)]
    return {"til": til_pred == true_global, "cil": pred == true_global, "task_id": torch.isin(pred, own)}
