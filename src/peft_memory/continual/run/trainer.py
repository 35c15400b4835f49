"""The continual trainer: one task adapter after another, driven by Accelerate.

Loop per task ``k`` (hooks in brackets, as in Avalanche's strategies): ``[before_task]`` add the task's adapter and
activate it -> train only its parameters on the task's data, logits restricted to the task's classes (its own head)
-> save the adapter atomically -> ``[after_task_saved]`` -> evaluate every task seen so far -> write
``results.json`` and the heatmap -> ``[after_eval]``. What differs between methods is the method object's
(:class:`~peft_memory.continual.methods.ContinualMethod`); the task-identity rule is a
:class:`~peft_memory.continual.inference.task_id.TaskIdentityRule`. This file only orchestrates.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, replace

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from peft import PeftModel, get_peft_model
from tqdm.auto import tqdm

from ...class_statistics import ClassStatistics
from ...pooling import set_head_pooling
from ..data.inputs import make_loader
from ..data.tasks import Task, TaskSequence, data_fingerprint
from ..inference.collection import StatisticsCollector
from ..inference.combined import ADAPTED_FILE
from ..inference.evaluation import EvalContext, class_metrics
from ..inference.outputs import OutputCache
from ..inference.prefix import SharedPrefix
from ..inference.statistics import split_train
from ..inference.task_id import get_rule
from ..methods import ContinualMethod
from . import checkpoint
from .arguments import ContinualArguments
from .checkpoint import run_config
from .optimization import optimize
from .output_dir import prepare_output_dir, release_output_dir
from .plots import plot_accuracy_matrix, plot_confusion_matrix
from .reference import REFERENCE_FILE, load_run, save_reference_predictions
from .results import RunResults, TaskIdentityRecord, TaskRecord, nested
from .resume import reload_finished_tasks, write_task_state
from .spec import RunSpec

logger = get_logger(__name__)


class TrainerCallback:
    """Named hooks of :class:`ContinualTrainer`; override any of them."""

    def before_task(self, trainer: ContinualTrainer, task: Task) -> None: ...

    def after_task_saved(self, trainer: ContinualTrainer, task: Task, path: str) -> None: ...

    def after_eval(self, trainer: ContinualTrainer, results: RunResults) -> None: ...


class ContinualTrainer:
    """Class-incremental training of one adapter per task, with per-sample task-identity inference.

    Args:
        base_model: a transformers ViT/DINOv2/BERT model (``*ForSequenceClassification``, ``*ForImageClassification``
            or bare encoder).
        sequence: the :class:`TaskSequence`.
        pipeline: the input pipeline (``TextInputs`` or ``ImageInputs``), with ``prepare(ds)`` and ``collate``.
        args: :class:`ContinualArguments`, or the :class:`~peft_memory.continual.run.spec.RunSpec` resolved from them
            (arguments are resolved here once: the recipe's inference, ``auto`` poolings, the checks).
        method: a :class:`~peft_memory.continual.methods.ContinualMethod`; default: the one ``args.method`` names.
        accelerator: an ``accelerate.Accelerator`` (its own mixed precision and accumulation then apply); created
            from ``args`` (``--mixed_precision``, ``--gradient_accumulation_steps``, ``--report_to``) with
            ``find_unused_parameters=True`` if ``None``.
        callbacks: :class:`TrainerCallback` objects.

    Raises:
        ValueError: for an unknown method or recipe, or an inference setting that does not apply to the method
            (:meth:`RunSpec.resolve`).
    """

    def __init__(self, base_model, sequence: TaskSequence, pipeline, args: ContinualArguments | RunSpec,
                 method: ContinualMethod | None = None, accelerator: Accelerator | None = None, callbacks=()):
        self.spec = RunSpec.resolve(args, base_model)  # before the Accelerator: bad arguments fail first
        args = self.spec.args
        self.accelerator = accelerator or Accelerator(
            log_with=args.report_to, mixed_precision=args.mixed_precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        set_head_pooling(base_model, args.head_pooling)  # load_model_and_pipeline did it already: then a no-op
        self.base_model, self.sequence, self.pipeline, self.args = base_model, sequence, pipeline, args
        self.method = method or self.spec.method(args)
        self.callbacks = list(callbacks)
        self._logging = bool(getattr(self.accelerator, "log_with", None))
        self.model: PeftModel | None = None
        self.task_id_mode, self.cil_rule = args.task_id_mode, args.cil_rule
        self.rule = get_rule(self.task_id_mode)
        self.statistics: dict[str, dict[str, ClassStatistics]] = {}  # task -> file name -> statistics
        self.held_out: dict[str, object] = {}  # task name -> its held-out training samples (or None)
        for task in sequence.tasks:
            if task.num_labels == 1:
                warnings.warn(f"task {task.name!r} has one class ({task.label_names[0]!r}): its cross-entropy is "
                              "always 0, so its adapter learns nothing; give every task at least two classes.",
                              stacklevel=2)
        fit_tasks, held_tasks = [], []
        for i, task in enumerate(sequence.tasks):  # a grown run's finished tasks come without training data
            fit, self.held_out[task.name] = (split_train(task.train, args.validation_fraction, args.seed + i)
                                             if task.train is not None else (None, None))
            fit_tasks.append(replace(task, train=fit))
            held_tasks.append(replace(task, train=self.held_out[task.name]))
        self.tasks = self.method.training_tasks(replace(sequence, tasks=fit_tasks))
        if all(t.train is not None for t in held_tasks):  # a task the method builds (joint: the union) holds out
            built = self.method.training_tasks(replace(sequence, tasks=held_tasks))  # the same build of theirs
            for task, held in zip(self.tasks, built, strict=True):
                self.held_out.setdefault(task.name, held.train)
        t = len(sequence)
        self.matrices = {k: np.full((t, t), np.nan) for k in ("cil", "til", "task_id")}
        self.pooled: dict[str, float] = {}
        self.per_class: dict = {}  # the CIL predictions' per-class accuracy and confusion matrix, last evaluation
        self.adapters_from: str | None = None
        self.timing: dict[str, list[float]] = {"train_seconds": [], "eval_seconds": []}
        # each evaluated sample's query and outputs under the adapters it met: adapters never change once trained
        self.outputs = OutputCache()
        #: (training, test) samples per task for results.json; a grown run's finished tasks keep their recorded ones
        self.task_sizes = {t.name: (len(t.train) if t.train is not None else 0, len(t.test) if t.test is not None else 0)
                           for t in sequence.tasks}
        # the data and model have loaded: now the names are checked and, with --overwrite_output_dir, the old run retired
        prepare_output_dir(args, self.accelerator.is_main_process, [t.name for t in self.tasks])

    # ----------------------------------------------------------------- run
    def run(self) -> RunResults:
        """Train and evaluate every task in order; returns the final :class:`RunResults` (also ``results.json``)."""
        set_seed(self.args.seed)
        if self._logging:
            self.accelerator.init_trackers("peft_memory", config=_flat(asdict(self.args)))
        start = self.resume() if self.args.resume else 0
        if self.accelerator.is_main_process:  # first: an interrupted run has it too
            checkpoint.write_run_config(self.args.output_dir, self.args)
        results = self.write_results(self.column(start - 1)) if start else None
        for k, task in enumerate(self.tasks[start:], start):
            for cb in self.callbacks:
                cb.before_task(self, task)
            self.train_task(task)
            self.collect_statistics(task)
            path = self.save_task(task)
            for cb in self.callbacks:
                cb.after_task_saved(self, task, path)
            self.evaluate_seen(self.column(k))
            results = self.write_results(self.column(k))
            self.save_state(k)
            self.log_summary(k, results)
            for cb in self.callbacks:
                cb.after_eval(self, results)
        if self.accelerator.is_main_process:
            self.save_reference_predictions()
        self.accelerator.end_training()
        release_output_dir(self.args.output_dir)
        return results

    def log_summary(self, k: int, results: RunResults) -> None:
        """One line as task ``k`` ends: average TIL and CIL accuracy over the tasks seen so far (%), and the task's
        training and evaluation seconds."""
        def pct(v):
            return "n/a" if v is None else f"{100 * v:.1f}"

        seconds = sum(times[k] for times in self.timing.values() if len(times) > k)
        logger.info(f"{self.tasks[k].name} ({k + 1}/{len(self.tasks)}) done: TIL {pct(results.til_average_accuracy)}"
                    f"  CIL {pct(results.average_accuracy)}  task-id {pct(results.task_id_accuracy)}"
                    f"  ({seconds:.0f} s)")

    def column(self, k: int) -> int:
        """The accuracy-matrix column that task ``k`` of :attr:`tasks` fills (the joint method's one task fills the
        last)."""
        return self.method.column(k, self.sequence)

    # ----------------------------------------------------------- resume
    def save_state(self, k: int) -> None:
        """Record ``self.tasks[k]`` as finished (:func:`~peft_memory.continual.run.resume.write_task_state`)."""
        write_task_state(self, k)

    @functools.cached_property
    def fingerprints(self) -> dict[str, str]:
        """:func:`~..data.tasks.data_fingerprint` of each task with data (computed when first needed)."""
        return {t.name: data_fingerprint(t) for t in self.sequence.tasks if t.train is not None}

    def resume(self) -> int:
        """Reload the finished tasks of an interrupted run in ``output_dir``; returns how many there are
        (:func:`~peft_memory.continual.run.resume.reload_finished_tasks`, which lists the errors raised)."""
        return reload_finished_tasks(self)

    # ------------------------------------------------------------- training
    def add_adapter(self, task: Task) -> None:
        """Add ``task``'s adapter (the method's config) to the model, creating the PEFT model for the first task,
        and activate it."""
        config = self.method.make_config(task, self.base_model)
        if self.model is None:
            self.model = get_peft_model(self.base_model, config, adapter_name=task.name)
        else:
            self.model.add_adapter(task.name, config)
        self.model.set_adapter(task.name)
        self.method.on_adapter_added(self.model, task, self.accelerator.device)

    def train_task(self, task: Task) -> None:
        """Add ``task``'s adapter and train it (the method's ``train`` hook: gradient steps on the adapter's
        parameters and the method's extra ones) on ``task.train``, the task's training data without the samples
        held out for validation (``--validation_fraction``, drawn per class from ``--seed`` and the task's place)."""
        start = time.perf_counter()
        self.add_adapter(task)
        self.method.train(self, task, task.train)
        self.model.eval()
        self.timing["train_seconds"].append(round(time.perf_counter() - start, 2))

    def optimize(self, task: Task, data, learning_rate: float | None = None) -> int:
        """Train the active adapter on ``data`` (:func:`~peft_memory.continual.run.optimization.optimize`: AdamW with
        ``--lr_scheduler_type``/``--warmup_ratio``, ``--gradient_accumulation_steps``, clipping, mixed precision);
        returns the optimiser steps taken."""
        return optimize(self, task, data, learning_rate)

    # ------------------------------------------------------ class statistics
    @property
    def first_task(self) -> str | None:
        """The first task's adapter name under ``--first_session_adaptation`` (its query joins the frozen one for
        the class statistics), else ``None``."""
        return self.tasks[0].name if self.args.first_session_adaptation else None

    def collect_statistics(self, task: Task) -> None:
        """``task``'s class statistics and, for methods that offer ``--cil_rule combined``, its adapted statistics
        (:class:`~peft_memory.continual.inference.collection.StatisticsCollector`)."""
        start = time.perf_counter()
        self.statistics[task.name] = StatisticsCollector(self).collect(task)
        self.timing.setdefault("statistics_seconds", []).append(round(time.perf_counter() - start, 2))

    def load_statistics(self, task: Task, folder: str) -> None:
        """Read ``task``'s statistics files (those its method writes) from its adapter folder, if present."""
        self.statistics[task.name] = StatisticsCollector(self).load(folder, task)

    def save_task(self, task: Task) -> str:
        """Save ``task``'s adapter to ``output_dir/<task>`` atomically (temporary folder, then rename). A symlink in
        its place is replaced by the folder; the symlink's target is never written to."""
        accelerator = self.accelerator
        final = os.path.join(self.args.output_dir, task.name)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            tmp = tempfile.mkdtemp(dir=self.args.output_dir, prefix=f".tmp-{task.name}-")
            self.model.save_pretrained(tmp, selected_adapters=[task.name])
            self.method.save_extras(task, os.path.join(tmp, task.name))
            for filename, stats in self.statistics.get(task.name, {}).items():
                stats.save(os.path.join(tmp, task.name), filename)
            if os.path.islink(final):  # a linked folder (a user's or an old run's): the link goes, its target stays
                os.remove(final)
            elif os.path.exists(final):
                shutil.rmtree(final)
            os.replace(os.path.join(tmp, task.name), final)
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    # ----------------------------------------------------------- evaluation
    def evaluate_seen(self, j: int) -> None:
        """Fill column ``j`` of the accuracy matrices: every task seen so far, with the adapters seen so far."""
        start = time.perf_counter()
        accelerator, args = self.accelerator, self.args
        seen = [t for k, t in enumerate(self.tasks) if self.column(k) <= j]
        evaluated = self.sequence.tasks[: j + 1]
        per_task = [self.statistics.get(t.name, {}) for t in seen]
        composed = {name: ClassStatistics.compose([s[name] for s in per_task]) for name in per_task[0]
                    if name != ADAPTED_FILE and all(name in s for s in per_task)} if per_task else {}
        ctx = EvalContext(self.model, seen, evaluated, self.method, self.rule, per_sample=not args.task_id_batchwise,
                          num_shots=args.task_id_shots, statistics=composed, task_statistics=per_task,
                          query_pooling=args.query_pooling, first_task=self.first_task, cil_rule=self.cil_rule,
                          top_k=args.combine_top_k, outputs=self.outputs, prefix=SharedPrefix(self.model))
        pooled = {"cil": [], "til": [], "task_id": [], "prediction": [], "truth": []}
        after = self.tasks[min(j, len(self.tasks) - 1)].name
        for i, task in enumerate(evaluated):
            if self._evaluation_set(task) is None:  # a grown run's old task whose test data are gone: cells empty
                continue
            loader = accelerator.prepare(
                make_loader(self._evaluation_set(task), self.pipeline, args.eval_batch_size, False, args.seed,
                            args.dataloader_num_workers))
            parts = {"cil": [], "til": [], "task_id": [], "prediction": [], "truth": []}
            for b, batch in enumerate(tqdm(loader, desc=f"eval {task.name} after {after}",
                                           disable=not accelerator.is_local_main_process, leave=False)):
                labels = batch.pop("labels")
                ctx.batch_key = (args.evaluate_on, task.name, b)  # the same samples in every evaluation
                with ctx.prefix.batch():  # the layers no adapter touches, once for the batch's forwards
                    out = self.method.evaluate_batch(ctx, batch, labels, i)
                out["truth"] = torch.as_tensor(task.global_labels)[labels.cpu()]
                for key, v in out.items():
                    parts[key].append(accelerator.gather_for_metrics(v.to(accelerator.device)).cpu())
            for key in parts:
                values = torch.cat(parts[key])
                if key in self.matrices:
                    self.matrices[key][i, j] = values.float().mean().item()
                pooled[key].append(values)
        self.pooled = {k: torch.cat(v).float().mean().item() for k, v in pooled.items() if k in self.matrices}
        self.per_class = class_metrics(evaluated, *(torch.cat(pooled[k]).tolist() for k in ("truth", "prediction")))
        self.timing["eval_seconds"].append(round(time.perf_counter() - start, 2))

    def _evaluation_set(self, task: Task):
        """``task.test``, or with ``--evaluate_on validation`` its held-out training samples (hyper-parameter
        search: the test set stays untouched); ``None`` for a grown run's task whose data are gone."""
        if self.args.evaluate_on == "test" or task.train is None:
            return task.test
        if self.held_out.get(task.name) is None:
            raise ValueError("--evaluate_on validation needs held-out samples: pass --validation_fraction > 0.")
        return self.held_out[task.name]

    def results(self, j: int) -> RunResults:
        """The :class:`RunResults` of the tasks seen after column ``j``."""
        sub = {k: m[: j + 1, : j + 1] for k, m in self.matrices.items()}
        tasks = [TaskRecord(t.name, t.label_names, t.global_labels, *self.task_sizes[t.name])
                 for t in self.sequence.tasks]
        identity = TaskIdentityRecord.describe(self.method.task_identity_mode(self.task_id_mode),
                                               not self.args.task_id_batchwise, self.cil_rule)
        return RunResults(
            method=self.method.name, benchmark=self.sequence.name, base_model=self.args.model, tasks=tasks,
            tasks_completed=j + 1, task_identity=identity, accuracy_matrix=nested(sub["cil"]),
            til_accuracy_matrix=nested(sub["til"]), task_id_accuracy_matrix=nested(sub["task_id"]),
            **self.method.summarize(sub["cil"]), til_average_accuracy=float(np.nanmean(sub["til"][:, -1])),
            cil_accuracy=self.pooled["cil"], til_accuracy=self.pooled["til"], task_id_accuracy=self.pooled["task_id"],
            per_class=self.per_class, timing=self.timing, config=run_config(self.args), versions=_versions(), adapters_from=self.adapters_from,
            data={"modality": self.sequence.modality, **self.sequence.description},
        )

    def write_results(self, j: int) -> RunResults:
        """:meth:`results` after column ``j``, written to ``results.json`` and the heatmap (main process)."""
        results = self.results(j)
        if self.accelerator.is_main_process:
            out = self.args.output_dir
            results.save(out)
            plot_accuracy_matrix(self.matrices["cil"][: j + 1, : j + 1], results.task_names[: j + 1],
                                 os.path.join(out, "accuracy_matrix.png"),
                                 title=f"{self.method.name}: class-incremental accuracy (%)")
            if self.per_class.get("confusion_matrix") and self.per_class.get("num_inputs"):  # few classes only
                plot_confusion_matrix(self.per_class["confusion_matrix"], self.per_class["classes"],
                                      os.path.join(out, "confusion_matrix.png"),
                                      title=f"{self.method.name}: class-incremental confusion matrix")
        if self._logging:
            values = results.to_json()
            self.accelerator.log({f"eval/{k}": v for k, v in values.items() if isinstance(v, float)}, step=j)
        return results

    def evaluate_saved_run(self, run_dir: str) -> RunResults:
        """Re-evaluate a finished run's saved adapters with this trainer's evaluation settings, without training.

        Column ``j`` of every matrix is rebuilt with the adapters of the tasks trained up to column ``j`` only, which
        training never changes afterwards: with the run's own settings this reproduces its matrices exactly.
        Typical use: DualPrompt-Soft-TF adapters evaluated with Gradient-ID as well as Prompt-ID.

        Raises:
            FileNotFoundError / ValueError: ``run_dir`` holds no finished run, or an adapter file is missing or
                corrupted.
        """
        finished = RunResults.load(run_dir)
        done = self.tasks[: finished.tasks_completed]
        deleted = [t.name for t in done if not os.path.isfile(os.path.join(run_dir, t.name, "adapter_config.json"))]
        if deleted:
            raise ValueError(f"{run_dir} lacks the adapter folders of {deleted}, finished tasks of the run: restore them,"
                             " or train them again with `peft-memory train ... --resume` on the run.")
        if finished.tasks_completed < len(finished.tasks):
            logger.warning(f"{run_dir} is a half-finished run ({finished.tasks_completed} of {len(finished.tasks)} "
                           "tasks): only its finished tasks are evaluated.")
        self.model = load_run(run_dir, [t.name for t in done], base_model=self.base_model)
        for task in done:
            self.method.load_extras(self.model, task, os.path.join(run_dir, task.name), self.accelerator.device)
            self.load_statistics(task, os.path.join(run_dir, task.name))
        self.adapters_from = os.path.abspath(run_dir)
        columns = sorted({self.column(k) for k in range(len(done))})
        for j in columns:
            self.evaluate_seen(j)
        results = self.write_results(columns[-1])  # once, at the end: an interrupted evaluation leaves no results.json
        release_output_dir(self.args.output_dir)
        return results

    def save_reference_predictions(self, per_task: int = 8) -> None:
        """A few test inputs per task and the final model's logits for them (``reference_predictions.safetensors``),
        so that a reload in another process can be checked bit for bit (:func:`reference.verify_run`)."""
        batches = {}
        for task in self.tasks:
            if task.test is None:  # a grown run's old task whose test data are gone
                continue
            test = task.test.select(range(min(per_task, len(task.test))))
            batch = next(iter(make_loader(test, self.pipeline, per_task, False, self.args.seed)))
            batch.pop("labels")
            batches[task.name] = {k: v.to(self.accelerator.device) for k, v in batch.items()}
        save_reference_predictions(self.model, batches, os.path.join(self.args.output_dir, REFERENCE_FILE))


def _flat(d: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in d.items()}


def _versions() -> dict[str, str]:
    import peft
    import transformers

    from ... import __version__

    return {"peft_memory": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}
