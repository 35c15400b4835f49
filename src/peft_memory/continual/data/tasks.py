"""Tasks and task sequences for class-incremental learning.

A :class:`Task` holds its train and test ``datasets.Dataset`` with a local ``label`` column (``0..k-1``), the
task's label names and ``global_labels``: the position of each local class in the sequence's label space. Tasks
whose classes coincide (Yelp and Amazon in the five-dataset text benchmark) share global labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import datasets
import numpy as np


@dataclass
class Task:
    """One task of a class-incremental sequence.

    Raises ``ValueError`` for no classes, a split without a ``label`` column, or labels outside
    ``0..len(label_names)-1``.

    Attributes:
        name: task (and adapter) name; unique in a sequence.
        label_names: the task's class names, index = local label.
        train, test: ``datasets.Dataset`` with a local integer ``label`` column and the input column(s).
        global_labels: global class id of each local label (``len == len(label_names)``).
    """

    name: str
    label_names: list[str]
    train: datasets.Dataset
    test: datasets.Dataset
    global_labels: list[int] = field(default_factory=list)

    def __post_init__(self):
        if not self.global_labels:
            self.global_labels = list(range(len(self.label_names)))
        if len(self.global_labels) != len(self.label_names):
            raise ValueError(f"task {self.name!r}: global_labels and label_names differ in length.")
        if not self.label_names:
            raise ValueError(f"task {self.name!r} has no classes; pass its label_names.")
        for split, ds in (("train", self.train), ("test", self.test)):
            if not isinstance(ds, datasets.Dataset):  # stand-ins (e.g. in evaluation-only code) are not checked
                continue
            if "label" not in ds.column_names:
                raise ValueError(f"task {self.name!r}: the {split} set has no 'label' column (columns: "
                                 f"{ds.column_names}); rename the label column to 'label'.")
            outside = sorted(v for v in ds.unique("label") if not 0 <= v < self.num_labels)
            if outside:
                raise ValueError(f"task {self.name!r}: {split} labels {outside[:5]} are outside the task's classes "
                                 f"0..{self.num_labels - 1} ({self.num_labels} label_names); map labels to local ids "
                                 "0..num_labels-1 or add the missing label_names.")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass
class TaskSequence:
    """An ordered list of tasks plus the names of the global label space.

    ``description``: how the sequence was made (source, test split, class order), recorded in ``results.json``.
    """

    name: str
    tasks: list[Task]
    global_label_names: list[str]
    description: dict = field(default_factory=dict)

    def __post_init__(self):
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task names must be unique, {dup} appear more than once; rename the tasks.")
        for t in self.tasks:  # a split may be None: a grown run's finished task (trained; its test data gone)
            if any(split is not None and len(split) == 0 for split in (t.train, t.test)):
                raise ValueError(f"task {t.name!r} has an empty train or test set; check the data source and counts.")

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    @property
    def num_classes(self) -> int:
        return len(self.global_label_names)

    @property
    def modality(self) -> str:
        """``"image"`` when the tasks' data have an ``image`` column, else ``"text"``."""
        data = next((t.train for t in self.tasks if t.train is not None), None)
        columns = getattr(data, "column_names", None) or []
        return "image" if "image" in columns else "text"

    @property
    def max_task_classes(self) -> int:
        """Classes of the largest task: the width of the base model's classifier (``num_labels``). Methods with
        their own task heads ignore it; the ``lora`` baseline trains a copy of it per task."""
        return max(t.num_labels for t in self.tasks)


def column_values(ds: datasets.Dataset, column: str) -> list:
    """Every value of ``column`` of ``ds`` (its rows after any ``select``), read from Arrow in one call.

    Iterating ``ds[column]`` decodes row by row (datasets 4+: 5 s against 0.6 s for 150,000 labels); an image column
    gives its undecoded ``{"bytes", "path"}`` cells."""
    return ds.with_format("arrow")[column].to_pylist()


def text_problem(ds: datasets.Dataset, column: str, blank: bool = True) -> tuple[str, str] | None:
    """Why ``column`` of ``ds`` cannot be tokenized, or ``None``: ``("type", "Value('int64')")`` for a column of
    another type, ``("rows", "[2, 5] and 3 more")`` for the rows (0-based) that are null or, with ``blank``, empty
    or blank."""
    feature = ds.features[column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        return "type", str(feature)
    cells = ds.with_format("arrow")[column]
    if not blank and cells.null_count == 0:  # the input pipeline's check, on every loader: Arrow's count, no copy
        return None
    empty = [i for i, v in enumerate(cells.to_pylist()) if v is None or (blank and not v.strip())]
    if empty:
        return "rows", f"{empty[:10]}" + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
    return None


def sample_per_class(ds: datasets.Dataset, per_class: int | None, seed: int, label_column: str = "label"):
    """Return ``per_class`` rows of each label (all rows if ``None``), drawn reproducibly from ``seed``.

    Raises:
        ValueError: if a class has fewer than ``per_class`` rows.
    """
    if per_class is None:
        return ds
    labels = np.asarray(column_values(ds, label_column))
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < per_class:
            raise ValueError(f"class {c} has {len(rows)} rows, fewer than the {per_class} asked for; lower the count.")
        picked.append(rng.choice(rows, size=per_class, replace=False))
    return ds.select(np.sort(np.concatenate(picked)))


def split_classes(classes: Sequence, num_tasks: int, seed: int | None) -> list[list]:
    """Shuffle ``classes`` with ``seed`` (``None`` keeps the order) and cut them into ``num_tasks`` equal tasks."""
    classes = list(classes)
    if num_tasks < 1 or len(classes) % num_tasks:
        raise ValueError(f"cannot split {len(classes)} classes into {num_tasks} equal tasks; pick a divisor.")
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(classes))
        classes = [classes[i] for i in order]
    per = len(classes) // num_tasks
    return [classes[i * per : (i + 1) * per] for i in range(num_tasks)]


def class_incremental_split(
    name: str,
    train: datasets.Dataset,
    test: datasets.Dataset,
    label_names: list[str],
    num_tasks: int,
    seed: int | None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    class_order: Sequence[int] | None = None,
) -> TaskSequence:
    """Split one labelled dataset into ``num_tasks`` tasks of disjoint classes (Split CIFAR-100 style).

    The class order is fixed by ``seed``, or given as ``class_order`` (class ids; classes left out are not used).
    Task ``k`` is named ``task_k``; its local labels follow the class order and ``global_labels`` give the original
    class ids.
    """
    if class_order is None:
        groups = split_classes(range(len(label_names)), num_tasks, seed)
    else:
        groups = split_classes(class_order, num_tasks, None)
    tasks = []
    train_labels, test_labels = (np.asarray(column_values(ds, "label")) for ds in (train, test))
    for k, classes in enumerate(groups):
        remap = {c: i for i, c in enumerate(classes)}

        def relabel(labels, remap=remap):
            return {"label": [remap[c] for c in labels]}

        parts = []
        for ds, labels, n in ((train, train_labels, train_per_class), (test, test_labels, test_per_class)):
            sub = ds.select(np.flatnonzero(np.isin(labels, classes)))
            sub = sample_per_class(sub, n, seed=(seed or 0) + k)
            parts.append(sub.map(relabel, batched=True, input_columns="label"))
        tasks.append(Task(f"task_{k}", [label_names[c] for c in classes], parts[0], parts[1], list(classes)))
    return TaskSequence(name, tasks, list(label_names))


def split_tasks(seq: TaskSequence, parts: int | Sequence[int], name: str | None = None) -> TaskSequence:
    """``seq`` with each task cut into ``parts`` tasks of consecutive classes: the same samples, class order and
    global labels, in ``parts`` times as many tasks (``task_0`` of 4 classes -> ``task_0`` and ``task_1`` of 2).
    ``parts`` may give one count per task (``[1, 2, 2, 2, 2]``: the first task kept whole, the others cut in two);
    the tasks are renamed ``task_0``, ``task_1``... in order; ``name``: the sequence's (default
    ``<name>_<tasks>tasks``).

    A longer sequence over exactly the data of a shorter one: its final class-incremental accuracy is comparable
    with the shorter one's (only what the adapters and task identity do with more tasks differs).

    Raises:
        ValueError: if ``parts`` gives a count per task for another number of tasks, or a task's classes do not cut
            into its count of equal groups.
    """
    counts = [parts] * len(seq.tasks) if isinstance(parts, int) else list(parts)
    if len(counts) != len(seq.tasks):
        raise ValueError(f"parts={counts} gives {len(counts)} counts for {len(seq.tasks)} tasks; give one per task "
                         "(or one number for all).")
    tasks = []
    for task, count in zip(seq.tasks, counts):
        k = len(task.label_names)
        if count < 1 or k % count:
            raise ValueError(f"task {task.name!r} has {k} classes, which do not cut into {count} equal tasks; "
                             "pick a divisor of the classes per task.")
        per = k // count
        for j in range(count):
            local = list(range(j * per, (j + 1) * per))

            def pick(ds, local=local, whole=count == 1):
                if whole:
                    return ds
                labels = np.asarray(column_values(ds, "label"))
                sub = ds.select(np.flatnonzero(np.isin(labels, local)))
                return sub.map(lambda b: {"label": [c - local[0] for c in b]}, batched=True, input_columns="label")

            tasks.append(Task(f"task_{len(tasks)}", task.label_names[local[0] : local[-1] + 1], pick(task.train),
                              pick(task.test), task.global_labels[local[0] : local[-1] + 1]))
    return TaskSequence(name or f"{seq.name}_{len(tasks)}tasks", tasks, seq.global_label_names,
                        {**seq.description, "split_tasks": parts if isinstance(parts, int) else counts})


def data_fingerprint(task: Task) -> str:
    """A digest of ``task``'s training and test samples (every column, in order; 16 hex digits of SHA-256 over
    their Arrow IPC stream, in one chunk and without the schema's metadata, where ``datasets`` keeps its own
    fingerprint of how the table was made): ``--resume`` compares it with the interrupted run's to name changed
    data. The same samples give the same digest however they were selected or cached."""
    import pyarrow as pa

    digest = hashlib.sha256()
    for split in (task.train, task.test):
        if split is None:
            digest.update(b"<none>")
            continue
        table = split.with_format("arrow")[:].replace_schema_metadata(None).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue())
    return digest.hexdigest()[:16]
