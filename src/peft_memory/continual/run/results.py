"""``results.json``: the typed record of a continual run, written by the trainer and read by every reporter.

:class:`RunResults` is the one owner of the file's layout. Accuracies are fractions in ``[0, 1]``; matrices are
``A[i][j]`` (task ``i`` evaluated after training task ``j``) with ``None`` where undefined (``i > j``, or a column the
run has not reached). ``schema_version`` says which layout a file has; :meth:`RunResults.from_json` refuses a newer
one with the fix.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field, fields

import numpy as np

from .checkpoint import LEGACY_VALUES, atomic_write_json, read_json

RESULTS_FILE = "results.json"
#: Layout version of ``results.json``. Files written before the field existed are version 1.
SCHEMA_VERSION = 1


def nested(matrix: np.ndarray) -> list[list[float | None]]:
    """An accuracy matrix ``(tasks, tasks)`` as the JSON lists :class:`RunResults` holds: ``NaN`` (undefined) becomes
    ``None``."""
    return [[None if np.isnan(x) else float(x) for x in row] for row in matrix]


def method_label(method: str, config: dict) -> str:
    """How tables name a run's method: ``method``, with `` (first-session)`` when its ``config`` has
    ``first_session_adaptation`` (its class statistics read the first task's adapter too)."""
    return f"{method} (first-session)" if config.get("first_session_adaptation") else method

Matrix = list[list[float | None]]


@dataclass
class TaskRecord:
    """One task of the sequence: its name, class names, global class ids and split sizes."""

    name: str
    label_names: list[str]
    global_labels: list[int]
    num_train: int
    num_test: int


@dataclass
class TaskIdentityRecord:
    """How the class of a test sample was found: the task-identity rule (``mode``), whether per sample or per test
    batch, and the class-incremental rule (``cil_rule``: ``routed``, ``unified``, ``combined`` or ``product``)."""

    mode: str
    per_sample: bool = True
    note: str = "per-sample inference"
    cil_rule: str = "routed"

    @classmethod
    def describe(cls, mode: str, per_sample: bool, cil_rule: str = "routed") -> TaskIdentityRecord:
        note = ("per-sample inference" if per_sample else
                "BATCH-WISE inference (one id per test batch): leaks task identity when a batch holds one task")
        return cls(mode, per_sample, note, cil_rule)

    @property
    def label(self) -> str:
        """``mode``, ``+ cil_rule`` unless routed, and ``(BATCH-WISE)`` when the inference was not per sample."""
        rule = "" if self.cil_rule == "routed" else f" + {self.cil_rule}"
        return self.mode + rule + ("" if self.per_sample else " (BATCH-WISE)")


@dataclass
class RunResults:
    """Everything ``results.json`` holds; see docs/continual.md for each metric's definition.

    Attributes:
        method, benchmark, base_model: what ran (``--method``, ``--benchmark``, ``--model``).
        tasks: the sequence's tasks, in training order.
        tasks_completed: tasks whose column of the matrices is filled.
        task_identity: the task-identity rule of the class-incremental numbers.
        accuracy_matrix, til_accuracy_matrix, task_id_accuracy_matrix: class-incremental, task-incremental and
            task-identity accuracy, ``(T, T)`` nested lists.
        average_accuracy, forgetting, backward_transfer: of the CIL matrix after the last completed task
            (``None`` where undefined, e.g. forgetting of joint training).
        til_average_accuracy: unweighted mean of the TIL matrix's last column.
        cil_accuracy, til_accuracy, task_id_accuracy: pooled over every test sample of the seen tasks.
        per_class: the CIL predictions on every seen task's test samples after the last completed task:
            ``accuracy`` (= ``cil_accuracy``), ``per_class_accuracy`` (class name -> fraction), ``classes`` and
            ``confusion_matrix`` (rows: true class, columns: predicted class, counts), ``num_inputs``
            (:func:`~peft_memory.continual.inference.metrics.prediction_metrics`); ``{}`` in files from before it.
        timing: seconds per task (``train_seconds``, ``eval_seconds``).
        config: the run's arguments; versions: library versions.
        adapters_from: for a re-evaluation (``peft-memory evaluate``), the run whose adapters were evaluated.
        data: how the task sequence was made: ``modality`` (``text``/``image``) and, for ``--dataset``, the source,
            the test split (a named split, or the seeded held-out fraction), the class order and its origin.
    """

    method: str
    benchmark: str
    base_model: str
    tasks: list[TaskRecord]
    tasks_completed: int
    task_identity: TaskIdentityRecord
    accuracy_matrix: Matrix
    til_accuracy_matrix: Matrix
    task_id_accuracy_matrix: Matrix
    average_accuracy: float | None
    forgetting: float | None
    backward_transfer: float | None
    til_average_accuracy: float | None
    cil_accuracy: float | None
    til_accuracy: float | None
    task_id_accuracy: float | None
    per_class: dict = field(default_factory=dict)
    timing: dict[str, list[float]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    adapters_from: str | None = None
    data: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def to_json(self) -> dict:
        """A JSON-ready dict (``adapters_from`` only when set)."""
        out = asdict(self)
        if out["adapters_from"] is None:
            del out["adapters_from"]
        return out

    @classmethod
    def from_json(cls, data: dict) -> RunResults:
        """Build from a dict read from ``results.json``.

        Raises:
            ValueError: if the file was written by a newer peft_memory (``schema_version`` above
                :data:`SCHEMA_VERSION`), or a required key is missing.
        """
        if not isinstance(data, dict):
            raise ValueError(f"results.json holds a {type(data).__name__}, not a run's results: it was not written by "
                             "peft-memory train.")
        version = data.get("schema_version", 1)
        if version > SCHEMA_VERSION:
            raise ValueError(f"results.json has schema_version {version}; this peft_memory reads up to "
                             f"{SCHEMA_VERSION}. Upgrade peft_memory (pip install -U peft_memory).")
        known = {f.name for f in fields(cls)}
        missing = sorted(f.name for f in fields(cls) if f.name not in data and f.default is MISSING
                         and f.default_factory is MISSING)
        if missing:
            raise ValueError(f"results.json lacks {missing}: it was not written by peft-memory train.")
        values = {k: v for k, v in data.items() if k in known}
        values["tasks"] = [TaskRecord(**t) for t in data["tasks"]]
        values["task_identity"] = TaskIdentityRecord(**data["task_identity"])
        values["schema_version"] = SCHEMA_VERSION
        values["config"] = {**LEGACY_VALUES, **values.get("config", {})}  # a run from before a flag existed
        return cls(**values)

    def save(self, folder: str) -> str:
        """Write ``folder/results.json`` atomically; returns the path."""
        path = os.path.join(folder, RESULTS_FILE)
        atomic_write_json(self.to_json(), path)
        return path

    @classmethod
    def load(cls, folder: str) -> RunResults:
        """Read ``folder/results.json``.

        Raises:
            FileNotFoundError: (with the fix) if there is none.
            ValueError: naming the file and the fix if it is corrupted or truncated.
        """
        path = os.path.join(folder, RESULTS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: {folder} is not a finished run (run `peft-memory train`).")
        return cls.from_json(read_json(path, "peft-memory train --resume with the run's arguments writes it again"))
