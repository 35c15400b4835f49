"""Training-free baselines over the frozen backbone: SimpleCIL (Zhou et al. 2023) and RanPAC (McDonnell et al.
NeurIPS 2023). Each task's adapter folder holds the class statistics that ARE the classifier; the PEFT adapter in it
(a head-only soft-mask adapter) records the task's classes, and its head is never trained nor read.

With ``--first_session_adaptation`` they become APER (Zhou et al., IJCV 2024) and RanPAC with its phase 1: the first
task's adapter holds soft masks (default placement) trained on that task alone, and every task's statistics are kept
on the frozen query concatenated with the query through those masks
(:func:`~peft_memory.continual.inference.statistics.statistics_query`)."""

from __future__ import annotations

import torch

from ...class_statistics import RandomProjection, RidgeClassifier
from ...tuners import SoftMaskConfig
from ..inference.declaration import Inference
from ..inference.prediction import dense
from ..inference.statistics import RANPAC_FILE, StatisticsSpace
from .base import ContinualMethod
from .soft_mask import SoftMask

#: Candidate ridge penalties of RanPAC, chosen per run on held-out training data (RanPAC's own search is similar).
RIDGE_GRID = (1e1, 1e2, 1e3, 1e4, 1e5, 1e6)


class SimpleCIL(ContinualMethod):
    """No training: the classifier over every seen class is a class-statistics classifier on the frozen query,
    nearest class mean (SimpleCIL, the default) or the Gaussian one (``--task_id_mode gaussian``: the frozen Gaussian
    classifier). Task-incremental: the same scores among the true task's classes."""

    name = "simple_cil"
    provides = frozenset({"class_statistics", "single_classifier", "adapts_backbone"})
    # recommended: APER's first session with the Gaussian classifier; paper: SimpleCIL's nearest class mean
    recipes = {"recommended": Inference("gaussian", "unified", first_session_adaptation=True),
               "paper": Inference("nearest_mean", "unified")}

    def __init__(self, args):
        super().__init__(args)
        self.first_task: str | None = None

    def training_tasks(self, sequence):
        self.first_task = sequence.tasks[0].name
        return super().training_tasks(sequence)

    def _adapts(self, task) -> bool:
        return self.args.first_session_adaptation and task.name == self.first_task

    def make_config(self, task, base_model):
        if self._adapts(task):
            return SoftMask(self.args).make_config(task, base_model)
        return SoftMaskConfig(label_names=task.label_names, target_modules=[])

    def train(self, trainer, task, data):
        """Training-free: the class statistics the trainer collects next are the whole classifier. With
        ``--first_session_adaptation`` the first task's soft masks (and head) train first."""
        if self._adapts(task):
            trainer.optimize(task, data)

    def predict_batch(self, ctx, batch):
        """The classifier's softmax over every seen class (its columns put in task order)."""
        scores, _, classes = ctx.rule.class_scores(ctx, batch)
        where = {int(c): i for i, c in enumerate(classes)}
        columns = [where[c] for task in ctx.tasks for c in task.global_labels]
        return dense(scores[:, columns].to(torch.float64).softmax(dim=-1), ctx.widths)

    def evaluate_batch(self, ctx, batch, labels, k):
        scores, owners, classes = ctx.rule.class_scores(ctx, batch)
        return statistics_evaluation(ctx, scores, owners, classes, labels, k)


class RanPAC(SimpleCIL):
    """RanPAC-style: the frozen query through a fixed random projection with a ReLU, ``h = ReLU(x W)`` with ``W``
    ``(d, --ranpac_dim)`` drawn from ``--seed``; class statistics of ``h`` give a ridge classifier
    ``(G + lambda I)^{-1} Q`` (Eq. 4), ``lambda`` chosen on held-out training data (:data:`RIDGE_GRID`)."""

    name = "ranpac"
    provides = frozenset({"projected_statistics", "single_classifier", "adapts_backbone"})
    recipes = {"recommended": Inference("ridge", "unified"), "paper": Inference("ridge", "unified")}

    def __init__(self, args):
        super().__init__(args)
        self.projection: RandomProjection | None = None

    def statistics_spaces(self, trainer):
        if self.projection is None:
            dim = trainer.base_model.config.hidden_size * (2 if self.args.first_session_adaptation else 1)
            self.projection = RandomProjection(dim, self.args.ranpac_dim, self.args.seed)
        space = StatisticsSpace(RANPAC_FILE, self.projection, {"ridge": (RIDGE_GRID, RidgeClassifier)})
        return [*super().statistics_spaces(trainer), space]


def statistics_evaluation(ctx, scores: torch.Tensor, owners: torch.Tensor, classes: torch.Tensor,
                          labels: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Correctness when the class scores ``(batch, C)`` over every seen class are the classifier: CIL the argmax of
    all, TIL the argmax among task ``k``'s classes, task identity the task of the CIL prediction; ``prediction``, the
    CIL argmax's global class ids ``(batch,)``."""
    truth = torch.as_tensor(ctx.evaluated[k].global_labels)[labels.cpu()]
    best = scores.argmax(dim=-1)
    own = scores.masked_fill(owners[None] != k, float("-inf")).argmax(dim=-1)
    return {"til": classes[own] == truth, "cil": classes[best] == truth, "task_id": owners[best] == k,
            "prediction": classes[best]}
