"""The method interface of the continual trainer: one object per method, with named hooks.

In the shape of Avalanche's strategies and plugins: :class:`~peft_memory.continual.run.trainer.ContinualTrainer` runs the
loop (add an adapter, train, save, evaluate) and calls these hooks at fixed points; a method overrides only the hooks
it needs. The maths (losses, task-identity rules, metrics) lives in plain functions and objects the hooks call.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from peft import PeftConfig
from torch import nn

from ..data.tasks import Task, TaskSequence
from ..inference import metrics
from ..inference.declaration import Inference
from ..inference.evaluation import EvalContext
from ..inference.prediction import Prediction
from ..inference.statistics import StatisticsSpace


class ContinualMethod:
    """One continual-learning method as the trainer runs it.

    Args:
        args: the run's :class:`~peft_memory.continual.ContinualArguments` (the method reads its own flags).

    Class attributes:
        name: the ``--method`` value.
        provides: what the method's adapters provide to inference
            (:data:`~peft_memory.continual.inference.declaration.CAPABILITIES`); which task-identity rules, CIL
            rules and first-session settings apply is derived from it
            (:func:`~peft_memory.continual.inference.declaration.valid_settings`), nowhere else.
        recipes: the inference setting of each ``--recipe``: ``recommended`` (the default: the best configuration
            measured on the 3-seed tables of docs/results.md) and ``paper`` (the method's own paper's rule).
    """

    name: ClassVar[str]
    provides: ClassVar[frozenset[str]] = frozenset()
    recipes: ClassVar[dict[str, Inference]] = {}

    def __init__(self, args):
        self.args = args

    @classmethod
    def recipe(cls, name: str) -> Inference:
        """The inference setting of ``--recipe name``.

        Raises:
            ValueError: for a recipe the method does not declare.
        """
        if name not in cls.recipes:
            raise ValueError(f"--recipe {name!r} is unknown for --method {cls.name}; choose one of "
                             f"{list(cls.recipes)}.")
        return cls.recipes[name]

    # ------------------------------------------------------------- the tasks
    def training_tasks(self, sequence: TaskSequence) -> list[Task]:
        """The tasks trained one after another, one adapter each (default: the sequence's tasks). Called again on the
        tasks' held-out parts, to give a task built here (joint: the union) its held-out samples."""
        return list(sequence.tasks)

    def adapter_tasks(self, tasks: list[Task]) -> list[Task]:
        """The tasks that have an adapter, in training order, from the sequence's tasks (their data are not read:
        a finished run's classifier builds them from ``results.json``). Default: the tasks themselves."""
        return list(tasks)

    def column(self, k: int, sequence: TaskSequence) -> int:
        """The accuracy-matrix column filled after training ``training_tasks(sequence)[k]`` (default ``k``)."""
        return k

    # --------------------------------------------------------------- training
    def make_config(self, task: Task, base_model: nn.Module) -> PeftConfig:
        """The PEFT config of ``task``'s adapter."""
        raise NotImplementedError

    def train(self, trainer, task: Task, data) -> None:
        """Train ``task``'s freshly added adapter on ``data`` (its training data minus the held-out part); default:
        ``trainer.optimize(task, data)``, AdamW steps. Training-free methods do nothing."""
        trainer.optimize(task, data)

    def on_adapter_added(self, model, task: Task, device) -> None:
        """Called after ``task``'s adapter was added and activated, before training (or when it is reloaded)."""

    def extra_parameters(self, task: Task) -> list[nn.Parameter]:
        """Parameters trained with ``task``'s adapter that live outside the ``PeftModel`` (default: none)."""
        return []

    def key_parameters(self) -> list[nn.Parameter]:
        """Prompt-ID keys among :meth:`extra_parameters` (they train at ``--key_learning_rate``)."""
        return []

    def auxiliary_loss(self, model, batch: dict, task: Task) -> torch.Tensor | None:
        """A term added to the cross-entropy of each training step (``model``: the unwrapped ``PeftModel``)."""
        return None

    def after_backward(self, accelerator, task: Task) -> None:
        """Called after each backward pass, before clipping and the optimiser step."""

    # ------------------------------------------------------------ persistence
    def save_extras(self, task: Task, folder: str) -> None:
        """Write what the method keeps beside ``task``'s adapter into its adapter folder."""

    def load_extras(self, model, task: Task, folder: str, device) -> None:
        """Read back what :meth:`save_extras` wrote, for ``model`` holding ``task``'s adapter (resume,
        re-evaluation)."""

    def statistics_spaces(self, trainer) -> list:
        """The spaces whose class statistics are saved with each adapter (default: the query itself, for the
        class-statistics task-identity rules)."""
        return [StatisticsSpace()]

    # ------------------------------------------------------------- evaluation
    def prompt_keys(self):
        """The Prompt-ID keys: ``None`` when the adapters carry their own (DualPrompt), else an object with
        ``frozen_features`` and ``key_similarity`` such as :class:`peft_memory.TaskKeys`."""
        return None

    def predict_batch(self, ctx: EvalContext, batch: dict) -> Prediction:
        """The class-incremental :class:`~peft_memory.continual.inference.prediction.Prediction` of ``batch``
        (default: the rule's); what ``evaluate_batch`` scores and ``ContinualClassifier.predict`` names."""
        return ctx.rule.predict_batch(ctx, batch)

    def evaluate_batch(self, ctx: EvalContext, batch: dict, labels: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """Bool ``til``, ``cil``, ``task_id`` ``(batch,)`` for a test batch of task ``k``, and ``prediction``, the
        CIL rule's global class ids ``(batch,)`` (default: the rule's)."""
        return ctx.rule.evaluate_batch(ctx, batch, labels, k)

    def task_identity_mode(self, mode: str) -> str:
        """How ``results.json`` names the task-identity rule ``mode``."""
        return mode

    def summarize(self, cil: np.ndarray) -> dict[str, float | None]:
        """``average_accuracy``, ``forgetting`` and ``backward_transfer`` of the CIL matrix so far."""
        return metrics.summarize(cil)
