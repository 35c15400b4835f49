"""The data wing: task sequences (:class:`Task`, :class:`TaskSequence`), the built-in benchmarks (text and vision),
your own data (``--dataset``), and the input pipelines that turn a task's ``datasets.Dataset`` into model batches."""

from .inputs import ImageInputs, TextInputs, make_loader
from .tasks import Task, TaskSequence, class_incremental_split

__all__ = ["ImageInputs", "Task", "TaskSequence", "TextInputs", "class_incremental_split", "make_loader"]
