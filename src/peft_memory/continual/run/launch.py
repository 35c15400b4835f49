"""Building a trainer from arguments: what ``peft-memory train``, ``evaluate`` and ``compare`` share."""

from __future__ import annotations

from dataclasses import replace

from accelerate import PartialState
from accelerate.utils import set_seed

from .arguments import ContinualArguments
from .grow import grown_arguments, grown_sequence, start_growing
from .loading import check_model_limits, load_model_and_pipeline, load_sequence
from .output_dir import prepare_output_dir
from .results import RunResults
from .spec import RunSpec
from .trainer import ContinualTrainer


def build_trainer(args: ContinualArguments | RunSpec, callbacks=(), sequence=None):
    """Load the base model, tokenizer and task sequence named by ``args`` and return a ContinualTrainer.
    ``sequence``: a :class:`~peft_memory.continual.data.tasks.TaskSequence` built in Python, trained instead of the
    data ``args`` names (e.g. :func:`~peft_memory.continual.data.tasks.split_tasks` of a benchmark). The run's
    ``run.yaml`` records ``args``, not the sequence: ``--resume`` it, or re-evaluate it, by passing the same sequence
    again (``--resume`` names changed data by their fingerprint).

    Raises:
        ValueError: for arguments :meth:`RunSpec.resolve` refuses, or a model limit they exceed, before any data or
            model loads; for ``sequence`` with ``--continue_from`` (a grown run's data are the new tasks').
    """
    if not isinstance(args, RunSpec) and args.continue_from:
        if sequence is not None:
            raise ValueError("build_trainer: pass either a sequence or --continue_from (whose new tasks are --dataset's), "
                             "not both.")
        return _growing_trainer(args, callbacks)
    spec = RunSpec.resolve(args)  # bad arguments fail before data and model load
    args = spec.args
    check_model_limits(args)
    prepare_output_dir(args, main_process=PartialState().is_main_process)  # locked before anything loads
    set_seed(args.seed)
    sequence = load_sequence(args) if sequence is None else sequence
    model, pipeline = load_model_and_pipeline(args, sequence.max_task_classes, sequence.modality)
    return ContinualTrainer(model, sequence, pipeline, spec, callbacks=callbacks)


def _growing_trainer(args: ContinualArguments, callbacks=()):
    """A trainer that grows the finished run ``args.continue_from`` by the tasks of ``args``' data
    (:mod:`.grow`)."""
    args, results = grown_arguments(args)
    spec = RunSpec.resolve(replace(args, resume=True))  # the run's tasks are the finished ones
    args = spec.args
    check_model_limits(args)
    sequence, _ = grown_sequence(args, results)
    main = PartialState().is_main_process
    prepare_output_dir(args, main_process=main, task_names=[t.name for t in sequence.tasks])
    start_growing(args, results, [t.name for t in sequence.tasks], main)
    PartialState().wait_for_everyone()
    set_seed(args.seed)
    model, pipeline = load_model_and_pipeline(args, sequence.max_task_classes, sequence.modality)
    trainer = ContinualTrainer(model, sequence, pipeline, spec, callbacks=callbacks)
    trainer.task_sizes.update({r.name: (r.num_train, r.num_test) for r in results.tasks})
    return trainer


EVALUATION_SETTINGS = ("task_id_mode", "cil_rule", "combine_top_k", "task_id_batchwise", "task_id_shots",
                       "eval_batch_size")


def evaluation_arguments(run_dir: str, output_dir: str, **settings) -> ContinualArguments:
    """The arguments of the finished run in ``run_dir`` with other evaluation ``settings`` and ``output_dir``.

    Raises:
        ValueError: for a setting that is not one of :data:`EVALUATION_SETTINGS` (it would change the training).
    """
    unknown = sorted(set(settings) - set(EVALUATION_SETTINGS))
    if unknown:
        raise ValueError(f"{unknown} are not evaluation settings; re-evaluation accepts {list(EVALUATION_SETTINGS)}.")
    config = RunResults.load(run_dir).config
    return ContinualArguments(**{**config, **settings, "output_dir": output_dir, "push_to_hub": None})


def evaluate_run(run_dir: str, output_dir: str, **settings) -> RunResults:
    """Re-evaluate a finished run's saved adapters under other evaluation settings (no training); the new
    ``results.json`` and heatmap go to ``output_dir`` (see :meth:`ContinualTrainer.evaluate_saved_run`)."""
    trainer = build_trainer(evaluation_arguments(run_dir, output_dir, **settings))
    return trainer.evaluate_saved_run(run_dir)
