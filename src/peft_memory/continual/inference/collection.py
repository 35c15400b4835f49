"""The trainer's class-statistics step, after each task is trained: the statistics of every space the method asks
for (:mod:`peft_memory.continual.inference.statistics`) and, for methods whose adapters provide their classifier input (``adapter_features``), the task's
adapted statistics with the held-out counts that choose the combination weight (:mod:`peft_memory.continual.inference.combined`).
"""

from __future__ import annotations

import os

import torch

from ...class_statistics import STATISTICS_FILE, ClassStatistics, StatisticsAccumulator, Validation
from ..data.inputs import make_loader
from ..data.tasks import Task
from .combined import ADAPTED_FILE, WEIGHT_GRID, AdaptedEvidence, adapted_statistics, combined_choice, head_inputs
from .evaluation import class_owners
from .statistics import collect_statistics, gathered_features, query_function, statistics_query
from .task_id.gaussian import GaussianRule, task_log_posterior


class StatisticsCollector:
    """Reads what it needs from a :class:`~peft_memory.continual.ContinualTrainer`: its model (with the task's
    adapter), pipeline, arguments, accelerator, method, tasks, held-out samples and the earlier tasks' statistics."""

    def __init__(self, trainer):
        self.trainer = trainer

    def _features_of(self, ds, fn):
        t = self.trainer
        return gathered_features(ds, t.pipeline, t.args, t.accelerator, fn)

    def collect(self, task: Task) -> dict[str, ClassStatistics]:
        """``{file name: statistics}`` of ``task``, to save in its adapter folder."""
        t = self.trainer
        k = t.tasks.index(task)
        fit_ds, held_ds = task.train, t.held_out.get(task.name)
        query = query_function(t.model, t.args.query_pooling, t.first_task)
        fit = self._features_of(fit_ds, query)
        held = self._features_of(held_ds, query) if held_ds is not None else None
        spaces = t.method.statistics_spaces(t)
        previous = {s.filename: [t.statistics[p.name][s.filename] for p in t.tasks[:k]] for s in spaces}
        stats = collect_statistics(task.global_labels, spaces, fit, held, previous)
        if "adapter_features" in t.method.provides:
            validate = None
            if held_ds is not None:
                validate = lambda evidence: self._validate_weight(task, held_ds, fit, previous, evidence)  # noqa: E731
            stats[ADAPTED_FILE] = adapted_statistics(t.model, task.name, task.global_labels, fit_ds, held_ds,
                                                     self._features_of, validate)
        return stats

    def _validate_weight(self, task: Task, held_ds, fit, previous, evidence: AdaptedEvidence) -> Validation:
        """Held-out samples of ``task`` through the combined rule over every seen task, once per weight. The task
        posterior comes from the earlier tasks' statistics and this task's fitted samples only."""
        t = self.trainer
        k = t.tasks.index(task)
        seen = t.tasks[: k + 1]
        acc = StatisticsAccumulator(task.global_labels, fit[0].shape[1])
        acc.add(*fit)
        composed = ClassStatistics.compose([*previous[STATISTICS_FILE], acc.statistics()])
        gaussian = GaussianRule().classifier(composed)
        owners = class_owners(seen, gaussian.labels)
        evidences = [AdaptedEvidence(t.statistics[s.name][ADAPTED_FILE]) for s in seen[:-1]] + [evidence]
        names, widths = [s.name for s in seen], [s.num_labels for s in seen]
        chosen = []
        loader = t.accelerator.prepare(make_loader(held_ds, t.pipeline, t.args.eval_batch_size, False, t.args.seed,
                                                   t.args.dataloader_num_workers))
        for batch in loader:
            batch.pop("labels")
            scores = gaussian.scores(statistics_query(t.model, batch, t.args.query_pooling, t.first_task)).cpu()
            task_lp = task_log_posterior(scores, owners, len(seen)).cpu()
            choices = combined_choice(lambda adapters, batch=batch: head_inputs(t.model, batch, adapters), names, widths, task_lp,
                                      evidences, list(WEIGHT_GRID), t.args.combine_top_k)
            tasks = torch.stack([choices[w][0] for w in WEIGHT_GRID], dim=-1)  # (batch, G)
            chosen.append(t.accelerator.gather_for_metrics(tasks.to(t.accelerator.device)).cpu())
        chosen = torch.cat(chosen)
        return Validation(list(WEIGHT_GRID), (chosen == k).sum(0).to(torch.float64), float(chosen.shape[0]))

    def load(self, folder: str) -> dict[str, ClassStatistics]:
        """The statistics files the method writes, read from an adapter folder (those present)."""
        t = self.trainer
        names = [s.filename for s in t.method.statistics_spaces(t)]
        if "adapter_features" in t.method.provides:
            names.append(ADAPTED_FILE)
        return {n: ClassStatistics.load(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))}
