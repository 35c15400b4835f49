"""One task's optimisation: AdamW with a transformers learning-rate schedule (warmup included), gradient accumulation
and mixed precision through Accelerate, gradient clipping and a step cap, as in transformers' ``*_no_trainer``
examples. :meth:`ContinualTrainer.optimize` calls :func:`optimize`."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..data.inputs import make_loader


def param_groups(trainer, params: list) -> list:
    """One group, or two when ``--key_learning_rate`` is given: the Prompt-ID keys (``e_key`` of the prompt tuners,
    or a method's extra key parameters) get their own learning rate."""
    if trainer.args.key_learning_rate is None:
        return params
    keys = {id(p) for n, p in trainer.model.named_parameters() if "e_key" in n}
    keys |= {id(p) for p in trainer.method.key_parameters()}
    return [{"params": [p for p in params if id(p) not in keys]},
            {"params": [p for p in params if id(p) in keys], "lr": trainer.args.key_learning_rate}]


def schedule_steps(batches_per_epoch: int, args) -> tuple[int, int]:
    """``(optimiser steps, warmup steps)`` of one task: ``ceil(batches / gradient_accumulation_steps)`` per epoch
    times ``--num_epochs``, capped by ``--max_steps_per_task``; warmup is ``ceil(warmup_ratio * steps)``."""
    total = math.ceil(batches_per_epoch / args.gradient_accumulation_steps) * args.num_epochs
    if args.max_steps_per_task is not None:
        total = min(total, args.max_steps_per_task)
    return total, math.ceil(args.warmup_ratio * total)


def check_finite(accelerator, value: torch.Tensor, task, step: int, what: str) -> None:
    """Raise ``FloatingPointError`` naming ``task``, the optimiser ``step`` and the flags to check when ``value`` (a
    scalar tensor) is NaN or infinite on any process (the decision is the same on every process)."""
    bad = (~torch.isfinite(value.detach().float())).float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad.to(accelerator.device), reduction="sum")
    if bad.item():
        raise FloatingPointError(
            f"task {task.name!r}, optimiser step {step}: {what} is {value.item()}; nothing of task {task.name!r} was "
            "saved (finished tasks are intact: --resume continues). Check --learning_rate (and --key_learning_rate, "
            "--finetune_learning_rate), --max_grad_norm, --warmup_ratio and --mixed_precision.")


def optimize(trainer, task, data, learning_rate: float | None = None) -> int:
    """Train the active adapter's parameters (and ``method.extra_parameters``) on ``data``; returns the optimiser
    steps taken.

    The loss is the cross-entropy over the task's own classes (``(batch, task.num_labels)`` logits) plus
    ``method.auxiliary_loss``. Gradients of ``--gradient_accumulation_steps`` batches are summed (Accelerate's
    ``accumulate``) before each clipped AdamW step; the learning rate follows ``--lr_scheduler_type`` with
    ``--warmup_ratio`` over the task's steps (a new schedule per task), peaking at ``learning_rate`` (default
    ``--learning_rate``; Prompt-ID keys: ``--key_learning_rate``). ``--mixed_precision`` is the Accelerator's.

    Raises:
        FloatingPointError: when the loss, or the gradient norm after clipping, is not finite (:func:`check_finite`);
            the task's adapter is then not saved, finished tasks are untouched.
    """
    args, accelerator, method = trainer.args, trainer.accelerator, trainer.method
    params = [p for p in trainer.model.parameters() if p.requires_grad] + method.extra_parameters(task)
    optimizer = torch.optim.AdamW(param_groups(trainer, params), lr=learning_rate or args.learning_rate,
                                  weight_decay=args.weight_decay)
    loader = make_loader(data, trainer.pipeline, args.batch_size, True, args.seed, args.dataloader_num_workers)
    model, optimizer, loader = accelerator.prepare(trainer.model, optimizer, loader)
    total, warmup = schedule_steps(len(loader), args)
    # Accelerate steps a prepared scheduler once per process and optimiser step (transformers' no_trainer examples).
    scheduler = accelerator.prepare(get_scheduler(args.lr_scheduler_type, optimizer,
                                                  num_warmup_steps=warmup * accelerator.num_processes,
                                                  num_training_steps=total * accelerator.num_processes))
    model.train()
    steps = 0
    bar = tqdm(total=total, desc=f"train {task.name}", disable=not accelerator.is_local_main_process)
    for _ in range(args.num_epochs):
        for batch in loader:
            with accelerator.accumulate(model), accelerator.autocast():
                labels = batch.pop("labels")
                logits = model(**batch).logits[:, : task.num_labels]  # the task's own head
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
                extra = method.auxiliary_loss(accelerator.unwrap_model(model), batch, task)
                if extra is not None:
                    loss = loss + extra
                check_finite(accelerator, loss, task, steps + 1, "the loss")
                accelerator.backward(loss)
                method.after_backward(accelerator, task)
                if accelerator.sync_gradients and args.max_grad_norm:
                    norm = accelerator.clip_grad_norm_(params, args.max_grad_norm)
                    check_finite(accelerator, norm, task, steps + 1, "the gradient norm")
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if trainer._logging:
                accelerator.log({f"train/{task.name}/loss": loss.item(),
                                 f"train/{task.name}/learning_rate": scheduler.get_last_lr()[0]})
            if steps >= total:
                break
        if steps >= total:
            break
    bar.close()
    trainer.model = accelerator.unwrap_model(model)
    accelerator.free_memory()
    return steps
