"""Joint training (the upper bound): one soft-mask adapter trained on every task's data at once."""

from __future__ import annotations

import datasets
import numpy as np
import torch

from ...tuners import SoftMaskConfig
from ..tasks import Task
from .soft_mask import SoftMask

JOINT_TASK = "joint"


class Joint(SoftMask):
    """Not continual: ONE adapter (``joint``) over the sequence's global label space, trained on the union of the
    tasks' training data; only the accuracy matrices' last column is filled. Its class-incremental prediction is the
    argmax over every class (no task inference); its "task identity" is whether that class lies in the right task."""

    name = "joint"
    task_id_modes = ("max_logit",)
    cil_rules = ("unified",)
    first_session_adaptation = False

    def training_tasks(self, sequence):
        parts = []
        for t in sequence.tasks:
            mapping = t.global_labels
            parts.append(t.train.map(lambda labels, m=mapping: {"label": [m[c] for c in labels]}, batched=True,
                                     input_columns="label"))
        train = datasets.concatenate_datasets(parts)
        return [Task(JOINT_TASK, list(sequence.global_label_names), train, sequence.tasks[0].test)]

    def column(self, k, sequence):
        return len(sequence) - 1

    def evaluate_batch(self, ctx, batch, labels, k):
        task = ctx.evaluated[k]  # the sequence's task k, whose test batch this is
        with torch.no_grad():
            logits = ctx.model(**batch).logits.cpu()
        own = torch.tensor(task.global_labels)
        true_global = own[labels.cpu()]
        pred = logits.argmax(dim=-1)
        til_pred = own[logits[:, own].argmax(dim=-1)]
        return {"til": til_pred == true_global, "cil": pred == true_global, "task_id": torch.isin(pred, own)}

    def task_identity_mode(self, mode):
        return "true joint classifier"

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
