"""``python -m experiments COMMAND``: the research harness behind ``make compare``, ``make tune`` and
``make compare-table`` (outside the installed package; run from the repository root)."""

from __future__ import annotations

import argparse
import json
import sys

from peft_memory.continual.cli import USER_ERRORS, configure_logging

from . import compare, reproduce, tables
from . import first_session as first_session_experiment
from . import grow as grow_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, tuning in (("compare", False), ("tune", True)):
        compare.add_arguments(sub.add_parser(name, help=compare.DESCRIPTIONS[tuning] + "; other flags go to every "
                                             "training run."), tuning)
    p = sub.add_parser("compare-table", help="Mean +- std over the committed slices of `compare`, the rows that chose "
                       "each method's recipe, and README's Which method? table: printed, or written between the "
                       "markers of --results and --readme.")
    p.add_argument("results_dir")
    p.add_argument("benchmarks", nargs="*", metavar="BENCHMARK", help="default: every folder of RESULTS_DIR")
    p.add_argument("--results", help="Markdown file (docs/results.md) whose <!-- compare:BENCHMARK --> and "
                   "<!-- recipes --> blocks are replaced")
    p.add_argument("--readme", help="Markdown file (README.md) whose <!-- which-method --> block is replaced")
    p.add_argument("--report_dir", default="results/reproduce", help="the reports of reproduce (<!-- reproduce -->)")
    p = sub.add_parser("reproduce", help="Train a method with a recipe and nothing else set on a committed slice's data, "
                       "seed and schedule, and compare with that slice's row; other flags go to the training run.")
    p.add_argument("--benchmark", choices=sorted(compare.BENCHMARKS), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="soft_mask")
    p.add_argument("--recipe", default="recommended")
    p.add_argument("--output_dir", default="outputs/reproduce")
    p.add_argument("--results_dir", default="results/compare")
    p.add_argument("--report_dir", default="results/reproduce")
    p = sub.add_parser("grow", help="The first tasks of a slice as a run, the rest added with --continue_from, against "
                       "the whole sequence trained at once (results/grow/).")
    p.add_argument("--benchmark", choices=sorted(compare.BENCHMARKS), default="wordnet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", type=int, default=3, help="tasks trained before growing")
    p = sub.add_parser("first-session", help="The first-session defaults on the 10-task WordNet's samples cut 4 + 8 x 2 "
                       "(a first session of 4 classes), beside the committed 10- and 5-task rows "
                       "(results/first_session/).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", action="store_true", help="train nothing: print the committed reports as one table "
                   "(mean +- std over their seeds)")
    p.add_argument("--results", help="with --table: Markdown file (docs/results.md) whose <!-- first-session --> block "
                   "is replaced")
    ns, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if extra and ns.command in ("compare-table", "first-session"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if ns.command == "first-session" and ns.results and not ns.table:
        parser.error("--results writes the table: pass --table with it (a training run writes its report only).")
    configure_logging()
    try:
        if ns.command == "compare-table":
            print(tables.write_tables(ns.results_dir, ns.benchmarks, ns.results, ns.readme, ns.report_dir))
            return 0
        if ns.command == "first-session":
            print(first_session_experiment.table(results=ns.results) if ns.table
                  else json.dumps(first_session_experiment.first_session(ns.seed), indent=2))
            return 0
        if ns.command == "grow":
            print(json.dumps(grow_experiment.grow(ns.benchmark, ns.seed, ns.first), indent=2))
            return 0
        if ns.command == "reproduce":
            report = reproduce.reproduce(ns.benchmark, ns.seed, ns.method, ns.recipe, ns.output_dir, ns.results_dir,
                                         ns.report_dir, extra)
            print(json.dumps(report, indent=2))
            return 0 if all(report["identical"].values()) else 1
        return compare.run(ns, extra, tuning=ns.command == "tune")
    except USER_ERRORS as err:
        print(f"python -m experiments {ns.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
