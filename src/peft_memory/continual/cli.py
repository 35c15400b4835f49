"""``peft-memory`` command line: ``train`` runs a continual benchmark, ``evaluate`` re-evaluates one, ``verify``
reloads one, ``report`` tabulates runs, ``push`` uploads a run to the Hub."""

from __future__ import annotations

import json
import sys

from transformers import HfArgumentParser

from .arguments import ContinualArguments
from .evaluation import CIL_RULES
from .loading import load_model_and_pipeline, load_sequence
from .results import RunResults
from .task_id import RULES

USAGE = """usage: peft-memory {train,verify,evaluate,report,push} [--help] [options]

  train   continual training and evaluation of one adapter per task (see `peft-memory train --help`)
  verify  reload a finished run's adapters in this process and compare with the saved reference logits:
          peft-memory verify OUTPUT_DIR
  evaluate  re-evaluate a finished run's adapters with other evaluation settings, without training:
          peft-memory evaluate RUN_DIR OUTPUT_DIR [--task_id_mode M] [--cil_rule R] [--task_id_batchwise] ...
  report  Markdown table of finished runs: peft-memory report OUTPUT_DIR [OUTPUT_DIR ...]
  push    upload a finished run's adapters and model card: peft-memory push OUTPUT_DIR REPO_ID
"""
COMMANDS = ("train", "verify", "evaluate", "report", "push")


def build_trainer(args: ContinualArguments, callbacks=()):
    """Load the base model, tokenizer and task sequence named by ``args`` and return a ContinualTrainer."""
    from accelerate.utils import set_seed

    from .checkpoint import prepare_output_dir
    from .methods import get_method
    from .trainer import ContinualTrainer

    get_method(args.method).resolve_task_id_mode(args.task_id_mode)  # bad arguments fail before data and model load
    prepare_output_dir(args)
    set_seed(args.seed)
    sequence = load_sequence(args)
    model, pipeline = load_model_and_pipeline(args, sequence.max_task_classes)
    return ContinualTrainer(model, sequence, pipeline, args, callbacks=callbacks)


def print_matrix(results: RunResults) -> None:
    names = results.task_names[: len(results.accuracy_matrix)]
    print(f"\nClass-incremental accuracy matrix (%), task identity: {results.task_identity.mode}, "
          f"{results.task_identity.note}")
    print("".ljust(10) + "".join(n[:9].rjust(10) for n in names))
    for name, row in zip(names, results.accuracy_matrix):
        print(name[:9].ljust(10) + "".join(("" if v is None else f"{100 * v:.1f}").rjust(10) for v in row))
    for key in ("average_accuracy", "forgetting", "backward_transfer", "cil_accuracy", "til_accuracy",
                "task_id_accuracy"):
        value = getattr(results, key)
        print(f"{key:>20}: " + ("n/a" if value is None else f"{100 * value:.2f}"))


def train(argv: list[str]) -> RunResults:
    (args,) = HfArgumentParser(ContinualArguments).parse_args_into_dataclasses(args=argv)
    trainer = build_trainer(args)
    results = trainer.run()
    if trainer.accelerator.is_main_process:
        print_matrix(results)
        from .hub import push_run_to_hub, write_model_card

        write_model_card(args.output_dir)
        if args.push_to_hub:
            print(push_run_to_hub(args.output_dir, args.push_to_hub))
    return results


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


def evaluate(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="peft-memory evaluate",
                                     description="Re-evaluate a finished run's adapters (no training).")
    parser.add_argument("run_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--task_id_mode", choices=sorted(RULES))
    parser.add_argument("--cil_rule", choices=list(CIL_RULES),
                        help="routed | unified | combined (see peft-memory train --help)")
    parser.add_argument("--combine_top_k", type=int)
    parser.add_argument("--task_id_batchwise", action="store_true", default=None,
                        help="one task id per test batch (labelled BATCH-WISE in the results)")
    parser.add_argument("--task_id_shots", type=int)
    parser.add_argument("--eval_batch_size", type=int)
    ns = parser.parse_args(argv)
    settings = {k: v for k, v in vars(ns).items() if k not in ("run_dir", "output_dir") and v is not None}
    print_matrix(evaluate_run(ns.run_dir, ns.output_dir, **settings))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    if argv[0] == "train":
        train(argv[1:])
        return 0
    if argv[0] == "verify":
        if len(argv) != 2:
            print("usage: peft-memory verify OUTPUT_DIR", file=sys.stderr)
            return 2
        from .reference import verify_run

        diffs = verify_run(argv[1])
        print(json.dumps({"max_abs_logit_diff": diffs}))
        return 0 if all(d == 0.0 for d in diffs.values()) else 1
    if argv[0] == "evaluate":
        return evaluate(argv[1:])
    if argv[0] == "report":
        from .report import markdown_table

        print(markdown_table(argv[1:]))
        return 0
    if len(argv) != 3:
        print("usage: peft-memory push OUTPUT_DIR REPO_ID", file=sys.stderr)
        return 2
    from .hub import push_run_to_hub

    print(json.dumps({"commit": str(push_run_to_hub(argv[1], argv[2]))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
