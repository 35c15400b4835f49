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
from .outputs import OutputCache
from .prefix import SharedPrefix
from .statistics import collect_statistics, gathered_features, statistics_query
from .task_id.gaussian import GaussianRule, task_log_posterior


class StatisticsCollector:
    """Reads what it needs from a :class:`~peft_memory.continual.ContinualTrainer`: its model (with the task's
    adapter), pipeline, arguments, accelerator, method, tasks, held-out samples and the earlier tasks' statistics.

    One pass over the task's fitted training samples and one over its held-out ones compute, per batch, the class
    statistics' query and, for methods whose adapters provide their classifier input, that input through the task's
    adapter, sharing the layers no adapter touches (:class:`~.prefix.SharedPrefix`). The held-out batches' outputs
    are kept (:class:`~.outputs.OutputCache`) for the validation of the combination weight, which reads them again.
    """

    def __init__(self, trainer):
        self.trainer = trainer

    def collect(self, task: Task) -> dict[str, ClassStatistics]:
        """``{file name: statistics}`` of ``task``, to save in its adapter folder."""
        t = self.trainer
        k = t.tasks.index(task)
        fit_ds, held_ds = task.train, t.held_out.get(task.name)
        adapted = "adapter_features" in t.method.provides
        prefix, held_outputs = SharedPrefix(t.model), OutputCache()

        def features(batch, index, cache=None):
            """The query, and with ``adapted`` the task adapter's classifier input, of one batch."""
            n = next(iter(batch.values())).shape[0]
            key = (task.name, index)
            with prefix.batch():
                query = (cache.query(key, lambda: statistics_query(t.model, batch, t.args.query_pooling, t.first_task))
                         if cache is not None else statistics_query(t.model, batch, t.args.query_pooling, t.first_task))
                if not adapted:
                    return query
                if cache is None:
                    return query, head_inputs(t.model, batch, [task.name] * n)[1]
                return query, cache.outputs(t.model, batch, key, [task.name] * n, prefix=prefix)[1]

        def gathered(ds, cache=None):
            return gathered_features(ds, t.pipeline, t.args, t.accelerator,
                                     lambda batch, index: features(batch, index, cache))

        fit_out, fit_y = gathered(fit_ds)
        held_out, held_y = gathered(held_ds, held_outputs) if held_ds is not None else (None, None)
        fit_q, fit_f = fit_out if adapted else (fit_out, None)
        held_q, held_f = (held_out if adapted else (held_out, None)) if held_ds is not None else (None, None)
        spaces = t.method.statistics_spaces(t)
        previous = {s.filename: [t.statistics[p.name][s.filename] for p in t.tasks[:k]] for s in spaces}
        held = (held_q, held_y) if held_ds is not None else None
        stats = collect_statistics(task.global_labels, spaces, (fit_q, fit_y), held, previous)
        if adapted:
            validate = None
            if held_ds is not None:
                def validate(evidence):
                    return self._validate_weight(task, held_ds, (fit_q, fit_y), previous, evidence, held_outputs,
                                                 prefix)
            stats[ADAPTED_FILE] = adapted_statistics(task.global_labels, (fit_f, fit_y), held_f, validate)
        return stats

    def _validate_weight(self, task: Task, held_ds, fit, previous, evidence: AdaptedEvidence, outputs: OutputCache,
                         prefix: SharedPrefix) -> Validation:
        """Held-out samples of ``task`` through the combined rule over every seen task, once per weight. The task
        posterior comes from the earlier tasks' statistics and this task's fitted samples only; the held-out
        batches' queries and this task's outputs come from ``outputs``, where :meth:`collect` left them."""
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
        for index, batch in enumerate(loader):
            batch.pop("labels")
            key = (task.name, index)
            with prefix.batch():
                query = outputs.query(key, lambda batch=batch: statistics_query(t.model, batch, t.args.query_pooling,
                                                                                t.first_task))
                task_lp = task_log_posterior(gaussian.scores(query).cpu(), owners, len(seen)).cpu()

                def forward(adapters, batch=batch, key=key):
                    return outputs.outputs(t.model, batch, key, adapters, prefix=prefix)

                choices = combined_choice(forward, names, widths, task_lp, evidences, list(WEIGHT_GRID),
                                          t.args.combine_top_k)
            tasks = torch.stack([choices[w][0] for w in WEIGHT_GRID], dim=-1)  # (batch, G)
            chosen.append(t.accelerator.gather_for_metrics(tasks.to(t.accelerator.device)).cpu())
        chosen = torch.cat(chosen)
        return Validation(list(WEIGHT_GRID), (chosen == k).sum(0).to(torch.float64), float(chosen.shape[0]))

    def load(self, folder: str, task: Task) -> dict[str, ClassStatistics]:
        """The statistics files the method writes, read from ``task``'s adapter folder (those present).

        Raises:
            ValueError: a file is not valid class statistics (:meth:`ClassStatistics.load`), or its classes are not
                ``task``'s (a file of another task or run).
        """
        t = self.trainer
        names = [s.filename for s in t.method.statistics_spaces(t)]
        if "adapter_features" in t.method.provides:
            names.append(ADAPTED_FILE)
        loaded = {n: ClassStatistics.load(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))}
        for name, stats in loaded.items():
            if sorted(stats.labels.tolist()) != sorted(task.global_labels):
                raise ValueError(f"{os.path.join(folder, name)} holds the statistics of classes "
                                 f"{sorted(stats.labels.tolist())}, task {task.name!r} has classes "
                                 f"{sorted(task.global_labels)}: it belongs to another task or run. Restore the "
                                 "task's own file, or retrain the task.")
        return loaded
