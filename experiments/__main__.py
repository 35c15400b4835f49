"""``python -m experiments COMMAND``: the research harness behind ``make compare``, ``make tune`` and
``make compare-table`` (outside the installed package; run from the repository root)."""

from __future__ import annotations

import argparse
import sys

from peft_memory.continual.cli import USER_ERRORS, configure_logging

from . import compare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, tuning in (("compare", False), ("tune", True)):
        compare.add_arguments(sub.add_parser(name, help=compare.DESCRIPTIONS[tuning] + "; other flags go to every "
                                             "training run."), tuning)
    p = sub.add_parser("compare-table", help="Mean +- std over the committed slices of `compare`, optionally written "
                       "into a Markdown file between its markers.")
    p.add_argument("results_dir")
    p.add_argument("benchmark")
    p.add_argument("--readme", help="Markdown file whose <!-- compare:BENCHMARK --> block is replaced")
    ns, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if extra and ns.command == "compare-table":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging()
    try:
        if ns.command == "compare-table":
            print(compare.update_readme(ns.readme, ns.results_dir, ns.benchmark) if ns.readme
                  else compare.markdown_table(ns.results_dir, ns.benchmark))
            return 0
        return compare.run(ns, extra, tuning=ns.command == "tune")
    except USER_ERRORS as err:
        print(f"python -m experiments {ns.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
