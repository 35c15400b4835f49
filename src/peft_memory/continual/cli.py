"""``peft-memory`` command line: ``train`` runs a continual benchmark, ``evaluate`` re-evaluates one, ``verify``
reloads one, ``report`` tabulates runs, ``push`` uploads a run to the Hub."""

from __future__ import annotations

import json
import sys

from transformers import HfArgumentParser

from .arguments import ContinualArguments
from .evaluation import CIL_RULES
from .launch import build_trainer, evaluate_run
from .results import RunResults
from .task_id import RULES

USAGE = """usage: peft-memory {train,verify,evaluate,report,push,compare,compare-table,tune} [--help] [options]

  train   continual training and evaluation of one adapter per task (see `peft-memory train --help`)
  verify  reload a finished run's adapters in this process and compare with the saved reference logits:
          peft-memory verify OUTPUT_DIR
  evaluate  re-evaluate a finished run's adapters with other evaluation settings, without training:
          peft-memory evaluate RUN_DIR OUTPUT_DIR [--task_id_mode M] [--cil_rule R] [--task_id_batchwise] ...
  report  Markdown table of finished runs: peft-memory report OUTPUT_DIR [OUTPUT_DIR ...]
  compare every method x task-identity rule on one benchmark and seed, results.json copied to a results folder:
          peft-memory compare --benchmark {wordnet,fashion_mnist} --seed K [--model PATH] [train options]
  compare-table  mean +- std over the committed slices, optionally written into the README between its markers:
          peft-memory compare-table RESULTS_DIR BENCHMARK [--readme README.md]
  tune    choose compare's hyper-parameters on held-out training samples (seed 0):
          peft-memory tune --benchmark {wordnet,fashion_mnist} [--model PATH]
  push    upload a finished run's adapters and model card: peft-memory push OUTPUT_DIR REPO_ID
"""
COMMANDS = ("train", "verify", "evaluate", "report", "push", "compare", "compare-table", "tune")


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
    if argv[0] in ("compare", "tune"):
        from .compare import main as compare

        return compare(argv[1:], tuning=argv[0] == "tune")
    if argv[0] == "compare-table":
        from .compare import markdown_table, update_readme

        if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3] != "--readme"):
            print("usage: peft-memory compare-table RESULTS_DIR BENCHMARK [--readme README.md]", file=sys.stderr)
            return 2
        print(update_readme(argv[4], argv[1], argv[2]) if len(argv) == 5 else markdown_table(argv[1], argv[2]))
        return 0
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
