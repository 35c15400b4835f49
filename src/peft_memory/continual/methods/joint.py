"""Joint training (the upper bounds): one adapter trained on every task's data at once, read by its head over every
class or, with ``--task_id_mode gaussian``, by the Gaussian classifier over the joint data's class statistics."""

from __future__ import annotations

import datasets
import numpy as np
import torch

from ...tuners import SoftMaskConfig
from ..data.tasks import Task
from ..inference.declaration import Inference
from ..inference.prediction import dense
from .soft_mask import SoftMask

JOINT_TASK = "joint"
#: How ``results.json`` names the joint runs' readings: by the head over every class, by the Gaussian classifier.
JOINT_HEAD = "true joint classifier"
JOINT_GAUSSIAN = "true joint classifier: Gaussian on the joint class statistics"


class Joint(SoftMask):
    """Not continual: ONE adapter (``joint``) over the sequence's global label space, trained on the union of the
    tasks' training data; only the accuracy matrices' last column is filled. Its class-incremental prediction is the
    argmax over every class (no task inference); its "task identity" is whether that class lies in the right task.

    With ``--task_id_mode gaussian`` the head is not read: the class is the argmax of the Gaussian classifier over
    the class statistics of the joint training data (shrinkage chosen on its held-out samples), and with
    ``--first_session_adaptation`` those statistics are kept on the frozen query concatenated with the query through
    the joint adapter (:func:`~peft_memory.continual.inference.statistics.statistics_query`): APER's classifier (Zhou et al.,
    IJCV 2024) on a backbone adapted to every class at once, the bound of the first-session methods, whose first
    session sees one task's classes."""

    name = "joint"
    provides = frozenset({"task_heads", "class_statistics", "single_classifier", "adapts_backbone"})
    recipes = {"recommended": Inference("gaussian", "unified", first_session_adaptation=True),
               "paper": Inference("max_logit", "unified")}

    def training_tasks(self, sequence):
        """The union of the tasks' data, labels mapped to global ids (the trainer builds the joint task's held-out
        samples, which choose its class statistics' shrinkage, the same way from the tasks' held-out parts)."""
        parts = [t.train.map(lambda labels, m=t.global_labels: {"label": [m[c] for c in labels]}, batched=True,
                             input_columns="label") for t in sequence.tasks]
        train = datasets.concatenate_datasets(parts)
        return [Task(JOINT_TASK, list(sequence.global_label_names), train, sequence.tasks[0].test)]

    def adapter_tasks(self, tasks):
        """One task, ``joint``, over every class of ``tasks`` in global order."""
        names = dict(sorted((g, n) for t in tasks for g, n in zip(t.global_labels, t.label_names)))
        return [Task(JOINT_TASK, list(names.values()), None, None)]

    def column(self, k, sequence):
        return len(sequence) - 1

    @staticmethod
    def class_logits(ctx, batch) -> torch.Tensor:
        """``(batch, C)`` over every class: the class-statistics rule's scores (nearest_mean, gaussian) or, with
        ``max_logit``, the joint head's logits."""
        if hasattr(ctx.rule, "class_scores"):  # a class-statistics rule: not the head
            scores, _, classes = ctx.rule.class_scores(ctx, batch)  # (batch, C) over the statistics' classes
            logits = scores.new_full((len(scores), ctx.tasks[0].num_labels), float("-inf"))
            logits[:, classes] = scores
            return logits
        with torch.no_grad():
            return ctx.model(**batch).logits.cpu()

    def predict_batch(self, ctx, batch):
        """The softmax over every class of the joint task (one "task": the predicted class is its local class)."""
        return dense(self.class_logits(ctx, batch).to(torch.float64).softmax(dim=-1), ctx.widths)

    def evaluate_batch(self, ctx, batch, labels, k):
        task = ctx.evaluated[k]  # the sequence's task k, whose test batch this is
        logits = self.class_logits(ctx, batch)
        own = torch.tensor(task.global_labels)
        true_global = own[labels.cpu()]
        pred = logits.argmax(dim=-1)
        til_pred = own[logits[:, own].argmax(dim=-1)]
        return {"til": til_pred == true_global, "cil": pred == true_global, "task_id": torch.isin(pred, own),
                "prediction": pred}

    def task_identity_mode(self, mode):
        if mode == "max_logit":
            return JOINT_HEAD
        return JOINT_GAUSSIAN if mode == "gaussian" else f"true joint classifier: {mode} on the joint class statistics"

    def summarize(self, cil):
        return {"average_accuracy": float(np.nanmean(cil[:, -1])), "forgetting": None, "backward_transfer": None}


class JointFull(Joint):
    """Joint full fine-tuning, the other upper bound: every weight of the encoder and a head over all classes train
    on the union of the tasks' data (PEFT's ``modules_to_save`` holds the trained copy of the encoder), at
    ``--finetune_learning_rate``."""

    name = "joint_full"

    def make_config(self, task, base_model):
        return SoftMaskConfig(label_names=task.label_names, target_modules=[],
                              modules_to_save=[base_model.base_model_prefix])

    def train(self, trainer, task, data):
        trainer.optimize(task, data, learning_rate=self.args.finetune_learning_rate)
