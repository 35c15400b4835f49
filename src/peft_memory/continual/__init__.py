"""Continual-learning protocol: task sequences, the Accelerate-driven trainer, methods, task-identity rules, metrics,
results, plots, CLI."""

from .data.tasks import Task, TaskSequence, class_incremental_split
from .inference.declaration import Inference, declare_task_id_rule
from .inference.metrics import average_accuracy, backward_transfer, forgetting
from .inference.task_id import RULES, TaskIdentityRule, get_rule
from .methods import METHODS, ContinualMethod, get_method
from .run.arguments import ContinualArguments
from .run.predictor import ContinualClassifier
from .run.results import RunResults
from .run.trainer import ContinualTrainer, TrainerCallback

__all__ = [
    "METHODS", "RULES", "ContinualArguments", "ContinualClassifier", "ContinualMethod", "ContinualTrainer", "Inference", "RunResults", "Task",
    "TaskIdentityRule", "TaskSequence", "TrainerCallback", "average_accuracy", "backward_transfer",
    "class_incremental_split", "declare_task_id_rule", "forgetting", "get_method", "get_rule",
]
