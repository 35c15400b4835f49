"""A run's arguments resolved once: :class:`RunSpec`.

``peft-memory train``, ``evaluate``, :func:`~peft_memory.continual.run.launch.build_trainer` and
:class:`~peft_memory.continual.run.trainer.ContinualTrainer` all go through :meth:`RunSpec.resolve`: the method's
``--recipe`` fills in the inference flags left out (``--task_id_mode``, ``--cil_rule``,
``--first_session_adaptation``), ``auto`` poolings become the model's, and the inference setting is checked against
the method by the declaration (:func:`~peft_memory.continual.inference.declaration.check`), before any data or model
loads. The resolved arguments are what ``results.json``, the model card and ``run.yaml`` record.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..inference.declaration import Inference, check
from ..methods import ContinualMethod, get_method
from .arguments import ContinualArguments
from .checkpoint import LEGACY_VALUES, run_config
from .loading import resolve_head_pooling, resolve_query_pooling


@dataclass(frozen=True)
class RunSpec:
    """A run's resolved arguments.

    Attributes:
        args: the :class:`ContinualArguments` with no inference flag left to the recipe and no ``auto`` pooling.
        method: the ``--method`` class.
        inference: the run's :class:`~peft_memory.continual.inference.declaration.Inference` setting.
    """

    args: ContinualArguments
    method: type[ContinualMethod]
    inference: Inference

    @classmethod
    def resolve(cls, args: ContinualArguments | RunSpec, base_model=None) -> RunSpec:
        """Resolve ``args`` (a :class:`RunSpec` is returned as it is).

        Args:
            args: the run's arguments.
            base_model: the loaded base model, if any: ``--head_pooling auto`` then reads its family (a ViT, or a
                BERT without a pooler, gets ``pooler``); without it, the model folder is read.

        Raises:
            ValueError: for an unknown method or recipe, an inference setting the method does not support (the
                message names every problem and the settings that apply), or ``--task_id_shots`` without batch-wise
                Gradient-ID.
        """
        if isinstance(args, RunSpec):
            return args
        method = get_method(args.method)
        recipe = method.recipe(args.recipe)
        first = args.first_session_adaptation
        setting = Inference(args.task_id_mode or recipe.task_id_mode, args.cil_rule or recipe.cil_rule,
                            recipe.first_session_adaptation if first is None else first, args.task_id_batchwise)
        given = {"task_id_mode": args.task_id_mode, "cil_rule": args.cil_rule, "first_session_adaptation": first}
        check(method.name, method.provides, setting, implied=f"--recipe {args.recipe}",
              explicit=frozenset(k for k, v in given.items() if v is not None))
        if args.task_id_shots is not None and not (setting.batchwise and setting.task_id_mode == "gradient_id"):
            raise ValueError(f"--task_id_shots {args.task_id_shots} sets how many samples of a test batch batch-wise "
                             "Gradient-ID reads; pass it with --task_id_mode gradient_id --task_id_batchwise, or drop "
                             "it.")
        resolved = replace(
            args, task_id_mode=setting.task_id_mode, cil_rule=setting.cil_rule,
            first_session_adaptation=setting.first_session_adaptation,
            query_pooling=resolve_query_pooling(args.query_pooling, args.model),
            head_pooling=resolve_head_pooling(args.head_pooling, args.model, base_model))
        return cls(resolved, method, setting)


def resolved_config(config: dict) -> dict:
    """A saved run's ``config`` (``results.json``, ``trainer_state.json``) resolved as :meth:`RunSpec.resolve`
    resolves arguments now: a setting the run predates takes its legacy value (``LEGACY_VALUES``: a run from before
    ``--recipe`` used its method's paper rule), a setting since removed is dropped.

    Raises:
        ValueError: as :meth:`RunSpec.resolve`, for a saved setting that no longer applies.
    """
    known = {f.name for f in fields(ContinualArguments)}
    args = ContinualArguments(**{k: v for k, v in {**LEGACY_VALUES, **config}.items() if k in known})
    return run_config(RunSpec.resolve(args).args)
