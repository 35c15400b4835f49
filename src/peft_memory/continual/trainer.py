"""The continual trainer: one task adapter after another, driven by Accelerate.

Loop per task ``k`` (hooks in brackets, as in Avalanche's strategies):
``[before_task]`` add the task's adapter and activate it -> train only its parameters on the task's data, logits
restricted to the task's classes (its own head) -> save the adapter atomically -> ``[after_task_saved]`` ->
evaluate every task seen so far -> write ``results.json`` and the heatmap -> ``[after_eval]``.
The maths (metrics, task-identity inference) lives in plain functions; this file only orchestrates.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from peft import PeftModel, get_peft_model
from tqdm.auto import tqdm

from ..task_keys import TaskKeys
from . import checkpoint, metrics
from .arguments import ContinualArguments
from .checkpoint import atomic_write_json, run_config
from .data import make_loader
from .evaluation import evaluate_batch, evaluate_concatenated_batch, evaluate_joint_batch
from .methods import MethodSpec
from .plots import plot_accuracy_matrix
from .reload import REFERENCE_FILE, save_reference_predictions
from .tasks import Task, TaskSequence


class TrainerCallback:
    """Named hooks of :class:`ContinualTrainer`; override any of them."""

    def before_task(self, trainer: ContinualTrainer, task: Task) -> None: ...

    def after_task_saved(self, trainer: ContinualTrainer, task: Task, path: str) -> None: ...

    def after_eval(self, trainer: ContinualTrainer, results: dict) -> None: ...


class ContinualTrainer:
    """Class-incremental training of one adapter per task, with per-sample task-identity inference.

    Args:
        base_model: a transformers ViT/DINOv2/BERT model (``*ForSequenceClassification``, ``*ForImageClassification``
            or bare encoder).
        sequence: the :class:`TaskSequence`.
        method: a :class:`MethodSpec` (``peft_memory.continual.methods.METHODS``).
        inputs: the input pipeline (``TextInputs``), with ``prepare(ds)`` and ``collate``.
        args: :class:`ContinualArguments`.
        accelerator: an ``accelerate.Accelerator``; created with ``find_unused_parameters=True`` if ``None``.
        callbacks: :class:`TrainerCallback` objects.
    """

    def __init__(self, base_model, sequence: TaskSequence, method: MethodSpec, inputs, args: ContinualArguments,
                 accelerator: Accelerator | None = None, callbacks=()):
        self.accelerator = accelerator or Accelerator(
            log_with=args.report_to,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.base_model, self.sequence, self.method, self.inputs, self.args = base_model, sequence, method, inputs, args
        self.callbacks = list(callbacks)
        self._logging = bool(getattr(self.accelerator, "log_with", None))
        self.model: PeftModel | None = None
        self.task_id_mode = method.resolve_task_id_mode(args.task_id_mode)
        self.task_keys = TaskKeys(base_model.config.hidden_size, args.prompt_init) if method.task_keys else None
        self.tasks = self._joint_tasks() if method.joint else list(sequence.tasks)
        t = len(sequence)
        self.matrices = {k: np.full((t, t), np.nan) for k in ("cil", "til", "task_id")}
        self.pooled: dict[str, float] = {}
        self.notes: dict = {}  # extra top-level entries of results.json
        self.timing: dict[str, list[float]] = {"train_seconds": [], "eval_seconds": []}
        checkpoint.prepare_output_dir(args)

    # ----------------------------------------------------------------- run
    def run(self) -> dict:
        """Train and evaluate every task in order; returns the final results dict (also in ``results.json``)."""
        set_seed(self.args.seed)
        if self._logging:
            self.accelerator.init_trackers("peft_memory", config=_flat(asdict(self.args)))
        start = self.resume() if self.args.resume else 0
        results = self.write_results(self._column(start - 1)) if start else {}
        for k, task in enumerate(self.tasks[start:], start):
            for cb in self.callbacks:
                cb.before_task(self, task)
            self.train_task(task)
            path = self.save_task(task)
            for cb in self.callbacks:
                cb.after_task_saved(self, task, path)
            self.evaluate_seen(self._column(k))
            results = self.write_results(self._column(k))
            self.save_state(k)
            for cb in self.callbacks:
                cb.after_eval(self, results)
        if self.accelerator.is_main_process:
            self.save_reference_predictions()
        self.accelerator.end_training()
        return results

    def _column(self, k: int) -> int:
        """Accuracy-matrix column filled after training ``self.tasks[k]`` (joint: the last one)."""
        return len(self.sequence) - 1 if self.method.joint else k

    # ----------------------------------------------------------- resume
    def save_state(self, k: int) -> None:
        """Record ``self.tasks[k]`` as finished (main process; see :mod:`peft_memory.continual.checkpoint`)."""
        if self.accelerator.is_main_process:
            checkpoint.write_state(self.args.output_dir, {
                "tasks_completed": k + 1, "task_names": [t.name for t in self.tasks], "config": run_config(self.args),
                "matrices": {key: _nested(m) for key, m in self.matrices.items()}, "pooled": self.pooled,
                "timing": self.timing, "notes": self.notes})
        self.accelerator.wait_for_everyone()

    def resume(self) -> int:
        """Reload the finished tasks of an interrupted run in ``output_dir``; returns how many there are.

        Raises:
            ValueError: if the interrupted run had other arguments or tasks, or an adapter file is corrupted.
            FileNotFoundError: if a finished task's ``adapter_model.safetensors`` is missing.
        """
        out = self.args.output_dir
        state = checkpoint.read_state(out)
        if state is None:
            if self.accelerator.is_main_process:
                print(f"--resume: no finished task in {out}; starting from the first task.")
            return 0
        checkpoint.check_resumable(state, self.args, [t.name for t in self.tasks])
        done = state["tasks_completed"]
        for task in self.tasks[:done]:
            folder = os.path.join(out, task.name)
            self._add_adapter(task)
            checkpoint.load_adapter_weights(self.model, task.name, folder, self.accelerator.device)
            if self.task_keys is not None:
                self.task_keys.load(task.name, folder, device=self.accelerator.device)
        self.model.eval()
        self.matrices = {k: np.array(v, dtype=float) for k, v in state["matrices"].items()}
        self.pooled, self.timing, self.notes = state["pooled"], state["timing"], state["notes"]
        checkpoint.load_rng_state(os.path.join(out, checkpoint.RNG_FILE))
        if self.accelerator.is_main_process:
            print(f"--resume: {done} of {len(self.tasks)} tasks finished in {out}; continuing with "
                  + (self.tasks[done].name if done < len(self.tasks) else "nothing (the run is complete)") + ".")
        return done

    # ------------------------------------------------------------- training
    @property
    def _key_weight(self) -> float | None:
        """lambda of the matching loss for keys kept by the trainer (adapters with keys read their config)."""
        return self.args.matching_loss_weight if self.task_keys is not None else None

    def _add_adapter(self, task: Task) -> None:
        config = self.method.make_config(task, self.args, self.base_model)
        if self.model is None:
            self.model = get_peft_model(self.base_model, config, adapter_name=task.name)
        else:
            self.model.add_adapter(task.name, config)
        self.model.set_adapter(task.name)
        if self.task_keys is not None:  # earlier tasks' keys are frozen, like their adapters
            self.task_keys.requires_grad_(False)
            self.task_keys.add(task.name, device=self.accelerator.device)

    def train_task(self, task: Task) -> None:
        """Add ``task``'s adapter and train its parameters (masks and head) only."""
        args, acc = self.args, self.accelerator
        start = time.perf_counter()
        self._add_adapter(task)
        params = [p for p in self.model.parameters() if p.requires_grad]
        keys = [] if self.task_keys is None else [self.task_keys.keys[task.name]]
        optimizer = torch.optim.AdamW(params + keys, lr=args.learning_rate, weight_decay=args.weight_decay)
        loader = make_loader(task.train, self.inputs, args.batch_size, True, args.seed, args.num_workers)
        model, optimizer, loader = acc.prepare(self.model, optimizer, loader)
        model.train()
        steps, step_cap = 0, args.max_steps_per_task
        total = len(loader) * args.num_epochs if step_cap is None else min(step_cap, len(loader) * args.num_epochs)
        bar = tqdm(total=total, desc=f"train {task.name}", disable=not acc.is_local_main_process)
        for _ in range(args.num_epochs):
            for batch in loader:
                labels = batch.pop("labels")
                logits = model(**batch).logits[:, : task.num_labels]  # the task's own head
                loss = torch.nn.functional.cross_entropy(logits, labels)
                if self.method.auxiliary_loss is not None:
                    loss = loss + self.method.auxiliary_loss(acc.unwrap_model(model), batch, task.name,
                                                             keys=self.task_keys, weight=self._key_weight)
                acc.backward(loss)
                if keys and acc.num_processes > 1:  # the keys live outside DDP: average their gradients by hand
                    keys[0].grad = acc.reduce(keys[0].grad, reduction="mean")
                if args.max_grad_norm:
                    acc.clip_grad_norm_(params + keys, args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if self._logging:
                    acc.log({f"train/{task.name}/loss": loss.item()})
                if step_cap is not None and steps >= step_cap:
                    break
            if step_cap is not None and steps >= step_cap:
                break
        bar.close()
        self.model = acc.unwrap_model(model)
        self.model.eval()
        acc.free_memory()
        self.timing["train_seconds"].append(round(time.perf_counter() - start, 2))

    def save_task(self, task: Task) -> str:
        """Save ``task``'s adapter to ``output_dir/<task>`` atomically (temporary folder, then rename)."""
        acc = self.accelerator
        final = os.path.join(self.args.output_dir, task.name)
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = tempfile.mkdtemp(dir=self.args.output_dir, prefix=f".tmp-{task.name}-")
            self.model.save_pretrained(tmp, selected_adapters=[task.name])
            if self.task_keys is not None:
                self.task_keys.save(task.name, os.path.join(tmp, task.name))
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(os.path.join(tmp, task.name), final)
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    # ----------------------------------------------------------- evaluation
    def evaluate_seen(self, j: int) -> None:
        """Fill column ``j`` of the accuracy matrices: every task seen so far, with the adapters seen so far."""
        start = time.perf_counter()
        seen = self.tasks[: j + 1] if not self.method.joint else self.tasks
        pooled = {"cil": [], "til": [], "task_id": []}
        eval_tasks = self.sequence.tasks[: j + 1]
        for i, task in enumerate(eval_tasks):
            loader = self.accelerator.prepare(
                make_loader(task.test, self.inputs, self.args.eval_batch_size, False, self.args.seed, self.args.num_workers)
            )
            parts = {"cil": [], "til": [], "task_id": []}
            for batch in tqdm(loader, desc=f"eval {task.name} after {self.tasks[min(j, len(self.tasks) - 1)].name}",
                              disable=not self.accelerator.is_local_main_process, leave=False):
                labels = batch.pop("labels")
                if self.method.joint:
                    out = evaluate_joint_batch(self.model, batch, labels, task)
                elif self.task_id_mode == "max_softmax":
                    out = evaluate_concatenated_batch(self.model, batch, labels, i, seen,
                                                      per_sample=not self.args.task_id_batchwise)
                else:
                    out = evaluate_batch(self.model, batch, labels, i, seen, self.task_id_mode,
                                         per_sample=not self.args.task_id_batchwise, num_shots=self.args.task_id_shots,
                                         keys=self.task_keys)
                for key, v in out.items():
                    parts[key].append(self.accelerator.gather_for_metrics(v.to(self.accelerator.device)).cpu())
            for key in parts:
                correct = torch.cat(parts[key])
                self.matrices[key][i, j] = correct.float().mean().item()
                pooled[key].append(correct)
        self.pooled = {k: torch.cat(v).float().mean().item() for k, v in pooled.items()}
        self.timing["eval_seconds"].append(round(time.perf_counter() - start, 2))

    def write_results(self, j: int) -> dict:
        """Metrics of the tasks seen after task ``j``; written to ``results.json`` and the heatmap (main process)."""
        sub = {k: m[: j + 1, : j + 1] for k, m in self.matrices.items()}
        joint = self.method.joint
        summary = metrics.summarize(sub["cil"]) if not joint else {
            "average_accuracy": float(np.nanmean(sub["cil"][:, -1])), "forgetting": None, "backward_transfer": None}
        results = {
            "method": self.method.name,
            "benchmark": self.sequence.name,
            "base_model": self.args.model,
            "tasks": [{"name": t.name, "label_names": t.label_names, "global_labels": t.global_labels,
                       "num_train": len(t.train), "num_test": len(t.test)} for t in self.sequence.tasks],
            "tasks_completed": j + 1,
            "task_identity": {
                "mode": "true joint classifier" if joint else self.task_id_mode,
                "per_sample": not self.args.task_id_batchwise,
                "note": "per-sample inference" if not self.args.task_id_batchwise else
                "BATCH-WISE inference (one id per test batch): leaks task identity when a batch holds one task",
            },
            "accuracy_matrix": _nested(sub["cil"]),
            "til_accuracy_matrix": _nested(sub["til"]),
            "task_id_accuracy_matrix": _nested(sub["task_id"]),
            **summary,
            "til_average_accuracy": float(np.nanmean(sub["til"][:, -1])),
            "cil_accuracy": self.pooled["cil"],
            "til_accuracy": self.pooled["til"],
            "task_id_accuracy": self.pooled["task_id"],
            "timing": self.timing,
            "config": run_config(self.args),
            "versions": _versions(),
            **self.notes,
        }
        if self.accelerator.is_main_process:
            out = self.args.output_dir
            atomic_write_json(results, os.path.join(out, "results.json"))
            names = [t.name for t in self.sequence.tasks[: j + 1]]
            plot_accuracy_matrix(sub["cil"], names, os.path.join(out, "accuracy_matrix.png"),
                                 title=f"{self.method.name}: class-incremental accuracy (%)")
        if self._logging:
            self.accelerator.log({f"eval/{k}": v for k, v in results.items() if isinstance(v, float)}, step=j)
        return results

    def save_reference_predictions(self, per_task: int = 8) -> None:
        """A few test inputs per task and the final model's logits for them (``reference_predictions.safetensors``),
        so that a reload in another process can be checked bit for bit (:func:`reload.verify_run`)."""
        batches = {}
        for task in self.tasks:
            test = task.test if not self.method.joint else self.sequence.tasks[0].test
            batch = next(iter(make_loader(test.select(range(min(per_task, len(test)))), self.inputs, per_task,
                                          False, self.args.seed)))
            batch.pop("labels")
            batches[task.name] = {k: v.to(self.accelerator.device) for k, v in batch.items()}
        save_reference_predictions(self.model, batches, os.path.join(self.args.output_dir, REFERENCE_FILE))

    def _joint_tasks(self) -> list[Task]:
        """One task holding every task's training data, labelled in the global label space (upper bound)."""
        parts = []
        for t in self.sequence.tasks:
            mapping = t.global_labels
            parts.append(t.train.map(lambda labels, m=mapping: {"label": [m[c] for c in labels]}, batched=True,
                                     input_columns="label"))
        train = datasets.concatenate_datasets(parts)
        return [Task("joint", list(self.sequence.global_label_names), train, self.sequence.tasks[0].test)]


def _nested(m: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(x) else float(x) for x in row] for row in m]


def _flat(d: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in d.items()}


def _versions() -> dict[str, str]:
    import peft
    import transformers

    from .. import __version__

    return {"peft_memory": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}
