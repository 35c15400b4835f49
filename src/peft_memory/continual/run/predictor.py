"""A finished continual run, loaded to classify new inputs: :class:`ContinualClassifier`.

``ContinualClassifier.from_pretrained(run_folder_or_hub_id).predict(inputs)`` loads the base model the run names,
every task adapter, the class statistics and Prompt-ID keys saved with them and the run's resolved inference
settings, then infers each input's task and class **per sample**, through the same functions ``peft-memory
evaluate`` scores (:meth:`ContinualMethod.predict_batch`): on a run's test split it gives the run's class-incremental
predictions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields

import datasets
import torch
from tqdm.auto import tqdm

from ...class_statistics import ClassStatistics
from ..data.inputs import make_loader
from ..data.tasks import Task, column_values, text_problem
from ..inference.collection import StatisticsCollector
from ..inference.combined import ADAPTED_FILE
from ..inference.evaluation import EvalContext
from ..inference.metrics import prediction_metrics
from ..inference.outputs import OutputCache
from ..inference.prefix import SharedPrefix
from ..inference.task_id import get_rule
from .arguments import ContinualArguments
from .checkpoint import LEGACY_VALUES
from .loading import load_model_and_pipeline, load_pipeline
from .reference import load_run
from .results import RESULTS_FILE, RunResults
from .spec import RunSpec

#: What ``from_pretrained(**overrides)`` may change: how the task and class are read, never what was trained.
PREDICTION_SETTINGS = ("task_id_mode", "cil_rule", "combine_top_k")


class ContinualClassifier:
    """Every task adapter of a finished run, classifying inputs among every class the run has seen.

    Build it with :meth:`from_pretrained`. Attributes: ``model`` (the ``PeftModel`` with every task adapter),
    ``spec`` (the run's :class:`~.spec.RunSpec`), ``tasks`` (the tasks with an adapter, in training order),
    ``label_names`` (every class, in task order: the columns of the scores), ``modality`` (``text`` or ``image``).
    """

    def __init__(self, model, pipeline, spec: RunSpec, method, tasks: list[Task], folder: str, modality: str,
                 device: str | torch.device = "cpu"):
        self.model, self.pipeline, self.spec, self.method = model, pipeline, spec, method
        self.args, self.tasks, self.modality = spec.args, tasks, modality
        self.base_model = model.get_base_model()
        collector = StatisticsCollector(self)  # reads method, args and base_model (RanPAC's projection)
        statistics = []
        for task in tasks:
            method.load_extras(model, task, os.path.join(folder, task.name), device)
            statistics.append(collector.load(os.path.join(folder, task.name), task))
        composed = {name: ClassStatistics.compose([s[name] for s in statistics]) for name in statistics[0]
                    if name != ADAPTED_FILE and all(name in s for s in statistics)}
        first = tasks[0].name if self.args.first_session_adaptation else None
        self.context = EvalContext(model, tasks, tasks, method, get_rule(self.args.task_id_mode),
                                   statistics=composed, task_statistics=statistics,
                                   query_pooling=self.args.query_pooling, first_task=first,
                                   cil_rule=self.args.cil_rule, top_k=self.args.combine_top_k,
                                   prefix=SharedPrefix(model))
        self.label_names = [name for task in tasks for name in task.label_names]

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, base_model=None, **overrides) -> ContinualClassifier:
        """Load a finished run: a ``peft-memory train`` output folder, or a Hub repo ``peft-memory push`` made
        (``huggingface_hub.snapshot_download``).

        Args:
            device, dtype: where and in what dtype the model runs (default: CPU, the checkpoint's dtype).
            base_model: the base model to load the adapters onto (default: the run's ``--model``).
            overrides: another valid ``task_id_mode``, ``cil_rule`` or ``combine_top_k`` than the run's.

        Raises:
            ValueError: for an override that is not a prediction setting, or a setting the run's method cannot
                support (named as ``peft-memory train`` names it); FileNotFoundError: a folder without results.json.
        """
        unknown = sorted(set(overrides) - set(PREDICTION_SETTINGS))
        if unknown:
            raise ValueError(f"{unknown} cannot be changed at prediction time (they change what was trained); "
                             f"ContinualClassifier.from_pretrained accepts {list(PREDICTION_SETTINGS)}.")
        folder = os.fspath(path_or_hub_id)
        if not os.path.isdir(folder):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(repo_id=folder)
        if not os.path.isfile(os.path.join(folder, RESULTS_FILE)):
            raise FileNotFoundError(f"{folder} has no {RESULTS_FILE}: pass a folder peft-memory train wrote, or a "
                                    "Hub repo peft-memory push made.")
        results = RunResults.load(folder)
        known = {f.name for f in fields(ContinualArguments)}
        config = {k: v for k, v in {**LEGACY_VALUES, **results.config}.items() if k in known}
        spec = RunSpec.resolve(ContinualArguments(**{**config, **overrides, "task_id_batchwise": False,
                                                     "task_id_shots": None}))  # always per sample
        sequence = [Task(t.name, t.label_names, None, None, t.global_labels) for t in results.tasks]
        method = spec.method(spec.args)
        tasks = method.adapter_tasks(sequence)[: results.tasks_completed]
        modality = results.data.get("modality") or "text"
        num_labels = max(t.num_labels for t in sequence)
        if base_model is None:
            base_model, pipeline = load_model_and_pipeline(spec.args, num_labels, modality)
        else:
            pipeline = load_pipeline(spec.args, modality)
        device = device or "cpu"
        model = load_run(folder, [t.name for t in tasks], base_model=base_model).to(device, dtype).eval()
        return cls(model, pipeline, spec, method, tasks, folder, modality, device)

    # ------------------------------------------------------------------ prediction
    def _dataset(self, inputs) -> datasets.Dataset:
        """``inputs`` as a dataset the run's input pipeline reads (a ``label`` column of zeros: there is none).

        Raises:
            ValueError: for inputs of the other modality, or none.
        """
        single = isinstance(inputs, (str, os.PathLike)) or not isinstance(inputs, Sequence)
        items = [inputs] if single else list(inputs)
        if not items:
            raise ValueError("inputs is empty; pass a text or an image, or a list of them.")
        if self.modality == "text":
            bad = [type(x).__name__ for x in items if not isinstance(x, str)]
            if bad:
                raise ValueError(f"this run classifies text (its model is {self.args.model}); inputs must be str or "
                                 f"a list of str, not {bad[0]}.")
            column = getattr(self.pipeline, "text_column", "text")
            return datasets.Dataset.from_dict({column: items, "label": [0] * len(items)})
        images = [_image(x) for x in items]
        return datasets.Dataset.from_dict({self.pipeline.image_column: images, "label": [0] * len(images)})

    def predictions(self, inputs, batch_size: int = 32, progress: bool | None = None):
        """The :class:`~..inference.prediction.Prediction` of each batch of ``inputs``, in input order (no gradient,
        per sample)."""
        ds = self._dataset(inputs)
        quiet = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # the tokenizer's map over a few inputs is no progress worth a bar
        try:
            loader = make_loader(ds, self.pipeline, batch_size, False, self.args.seed)
        finally:
            if not quiet:
                datasets.enable_progress_bars()
        device = next(self.model.parameters()).device
        show = len(loader) > 4 if progress is None else progress
        with torch.inference_mode():
            for batch in tqdm(loader, desc="predict", disable=not show, leave=False):
                batch.pop("labels")
                batch = {k: v.to(device) for k, v in batch.items()}
                # the batch's query and each (sample, adapter) output once, as evaluation computes them: a rule that
                # reads the query twice (task posterior, then class scores) no longer runs the frozen model twice
                self.context.outputs, self.context.batch_key = OutputCache(), "predict"
                with self.context.prefix.batch():
                    yield self.method.predict_batch(self.context, batch)

    def predict(self, inputs, batch_size: int = 32) -> list[str] | str:
        """The predicted class name of each input (``str`` for one input).

        Args:
            inputs: text (``str``, ``list[str]``) or images (PIL images, arrays ``(H, W[, C])``, paths), as the
                run's modality.
            batch_size: inputs per forward (an input's answer does not depend on the others in its batch).
        """
        names = [self._label(int(t), int(c)) for p in self.predictions(inputs, batch_size)
                 for t, c in zip(p.task, p.local)]
        return names[0] if _single(inputs) else names

    def __call__(self, inputs, top_k: int = 1, batch_size: int = 32):
        """transformers' classification-pipeline output: per input a list of ``{"label", "score", "task"}``, the
        ``top_k`` classes the run's rule ranks first (the prediction first; ``score`` as
        :mod:`~..inference.prediction` defines it per rule, ``task`` the task the class belongs to). One input
        gives one list.

        Raises:
            ValueError: for ``top_k`` below 1.
        """
        if top_k < 1:
            raise ValueError(f"top_k={top_k}: ask for at least the predicted class (top_k=1).")
        owner = [(t, c) for t, task in enumerate(self.tasks) for c in range(task.num_labels)]
        out = []
        for p in self.predictions(inputs, batch_size):
            order = p.rank.argsort(dim=-1, descending=True)
            for row in range(order.shape[0]):
                cols = [int(j) for j in order[row, :top_k] if torch.isfinite(p.rank[row, j])]
                out.append([{"label": self.label_names[j], "score": float(p.scores[row, j]),
                             "task": self.tasks[owner[j][0]].name} for j in cols])
        return out[0] if _single(inputs) else out

    def _label(self, task: int, local: int) -> str:
        return self.tasks[task].label_names[local]


def _single(inputs) -> bool:
    return isinstance(inputs, (str, os.PathLike)) or not isinstance(inputs, Sequence)


def _image(x):
    """A PIL image from a PIL image, an array ``(H, W)`` or ``(H, W, C)`` (uint8, or floats in ``[0, 1]``) or a path.

    Raises:
        ValueError: naming the input for anything else, or a file that is no image.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(x, Image.Image):
        return x
    if isinstance(x, (str, os.PathLike)):
        try:
            with Image.open(x) as img:
                img.load()
                return img.copy()
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"{x} is not a readable image ({err}).") from err
    try:
        import numpy as np

        array = np.asarray(x)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
        return Image.fromarray(array)
    except (TypeError, ValueError) as err:
        raise ValueError(f"this run classifies images; an input of type {type(x).__name__} is none (pass PIL "
                         "images, arrays of shape (H, W) or (H, W, C), or paths).") from err


def predict_dataset(classifier: ContinualClassifier, source: str, output: str, split: str = "test",
                    text_column: str | None = None, image_column: str | None = None, label_column: str = "label",
                    top_k: int = 1, batch_size: int = 32, config_name: str | None = None) -> dict:
    """``peft-memory predict``: classify a dataset (anything ``train --dataset`` reads, labelled or not) and write
    its columns plus ``label``, ``score``, ``task`` (and the ``top_k`` ranking; all five named ``predicted_*`` when the
    input has a column of one of those names) to ``output`` (``.csv``, or
    ``.jsonl``/``.json``: one JSON object per line), in input order. Under ``accelerate launch`` the inputs are split
    across the processes and the main process writes. With a label column, also the accuracy, per-class accuracy
    and the class-incremental confusion matrix (``<output stem>.metrics.json`` and ``confusion_matrix.png``
    beside it), returned as a dict.

    Raises:
        ValueError: for a missing split or column, inputs of the other modality, an output of another extension.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from ..data.custom_data import _input_column, read_dataset
    from .checkpoint import atomic_write_json
    from .plots import plot_confusion_matrix

    ext = os.path.splitext(output)[1].lower()
    if ext not in (".csv", ".jsonl", ".json"):
        raise ValueError(f"--output {output!r}: write predictions to a .csv or .jsonl file.")
    data = read_dataset(source, config_name, training=False)  # a folder of test.csv alone is fine here
    if split not in data:
        if len(data) != 1:
            raise ValueError(f"--split {split!r} is not in {source} (splits: {list(data)}); pass --split.")
        split = next(iter(data))  # one file, one split: that one
    ds = data[split]
    modality, column = _input_column(ds, text_column, image_column)
    if modality != classifier.modality:
        raise ValueError(f"the run classifies {classifier.modality}, {source} holds {modality} in column {column!r}; "
                         f"pass --{classifier.modality}_column naming the column to classify.")
    kind, detail = (text_problem(ds, column, blank=False) if modality == "text" else None) or (None, None)
    if kind:
        raise ValueError(f"column {column!r} of {source} holds {detail}, not text; pass --text_column naming the "
                         "text column." if kind == "type" else f"column {column!r} of {source} has no text in rows "
                         f"{detail} (0-based: null); fill or drop those rows.")
    state = PartialState()
    with state.split_between_processes(list(range(len(ds)))) as mine:
        inputs = (column_values(ds.select(mine), column) if modality == "text"  # images decoded to PIL by datasets
                  else list(ds.select(mine)[column]))
        ranked = classifier(inputs, top_k=top_k, batch_size=batch_size) if mine else []
        gathered = gather_object(list(zip(mine, ranked)))
    metrics = {}
    if state.is_main_process:
        results = [r for _, r in sorted(dict(gathered).items())]
        rows = {c: column_values(ds, c) for c in ds.column_names if c != column or modality == "text"}
        ours = {"label": [r[0]["label"] for r in results], "score": [r[0]["score"] for r in results],
                "task": [r[0]["task"] for r in results]}
        if top_k > 1:
            ours.update(top_labels=[[e["label"] for e in r] for r in results],
                        top_scores=[[e["score"] for e in r] for r in results])
        clash = any(k in rows for k in ours)  # the input's own columns stay as they are; then ours are predicted_*
        rows.update({f"predicted_{k}" if clash else k: v for k, v in ours.items()})
        out = datasets.Dataset.from_dict(rows)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        if ext == ".csv":
            out.to_csv(output, index=False)
        else:
            out.to_json(output, lines=True)
        if label_column in ds.column_names:
            feature = ds.features[label_column]
            truth = [feature.names[v] if isinstance(feature, datasets.ClassLabel) else str(v)
                     for v in column_values(ds, label_column)]
            metrics = prediction_metrics(truth, ours["label"], classifier.label_names)
            base = os.path.splitext(output)[0]
            atomic_write_json(metrics, f"{base}.metrics.json")
            if metrics["confusion_matrix"] is not None:  # a readable picture: up to DENSE_CONFUSION_CLASSES classes
                plot_confusion_matrix(metrics["confusion_matrix"], metrics["classes"],
                                      os.path.join(os.path.dirname(os.path.abspath(output)), "confusion_matrix.png"))
    state.wait_for_everyone()
    return metrics
