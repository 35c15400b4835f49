"""Continual-learning protocol: task sequences, the Accelerate-driven trainer, metrics, plots, CLI."""

from .arguments import ContinualArguments
from .methods import METHODS, MethodSpec
from .metrics import average_accuracy, backward_transfer, forgetting
from .tasks import Task, TaskSequence, class_incremental_split
from .trainer import ContinualTrainer, TrainerCallback

__all__ = [
    "METHODS", "ContinualArguments", "ContinualTrainer", "MethodSpec", "Task", "TaskSequence", "TrainerCallback",
    "average_accuracy", "backward_transfer", "class_incremental_split", "forgetting",
]
