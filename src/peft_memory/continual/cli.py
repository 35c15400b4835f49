"""``peft-memory`` command line: one argparse parser with a subcommand per task (``train``, ``evaluate``, ``verify``,
``report``, ``push``). The research harness (``compare``, ``tune``, ``compare-table``) lives outside the package, in
the repository's ``experiments/``. ``train``'s flags are the fields of
:class:`~peft_memory.continual.run.arguments.ContinualArguments`, grouped as in ``--help`` by ``HfArgumentParser``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from dataclasses import fields

from accelerate.logging import get_logger

from .inference.evaluation import CIL_RULES
from .inference.task_id import RULES
from .methods import METHODS
from .run.arguments import ARGUMENT_GROUPS, ContinualArguments
from .run.loading import BENCHMARKS
from .run.results import RunResults

logger = get_logger(__name__)  # messages after the Accelerator exists, from the main process only


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """transformers' help formatter, without ``(default: None)`` and without a default the help text already gives."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower():
            return text
        return text + " (default: %(default)s)"


def _set_choices(parser: argparse.ArgumentParser, choices: dict[str, list[str]]) -> None:
    """Give ``--flag`` its ``choices`` (the registries' names, read when the parser is built)."""
    for action in parser._actions:
        for flag in action.option_strings:
            if flag in choices:
                action.choices = choices[flag]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``peft-memory`` parser and its subcommand parsers by name."""
    from transformers import HfArgumentParser

    from .. import __version__

    parser = argparse.ArgumentParser(prog="peft-memory", description="Continual learning with PEFT adapters: one "
                                     "adapter per task, class-incremental evaluation with per-sample task identity.")
    parser.add_argument("--version", action="version", version=f"peft_memory {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also: environment variable PEFT_MEMORY_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help, **kw):
        return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter, **kw)

    commands = {"train": add("train", "Train one adapter per task of a class-incremental sequence and evaluate "
                             "every task seen after each one.",
                             parents=[HfArgumentParser(ARGUMENT_GROUPS, add_help=False)])}
    _set_choices(commands["train"], {"--method": sorted(METHODS), "--benchmark": list(BENCHMARKS),
                                     "--task_id_mode": sorted(RULES), "--cil_rule": list(CIL_RULES)})

    p = commands["evaluate"] = add("evaluate", "Re-evaluate a finished run's adapters with other evaluation settings "
                                   "(no training).")
    p.add_argument("run_dir", help="the finished run")
    p.add_argument("output_dir", help="where the new results.json and heatmap go")
    p.add_argument("--task_id_mode", choices=sorted(RULES))
    p.add_argument("--cil_rule", choices=list(CIL_RULES))
    p.add_argument("--combine_top_k", type=int)
    p.add_argument("--task_id_batchwise", action="store_true", default=None,
                   help="one task id per test batch (labelled BATCH-WISE in the results)")
    p.add_argument("--task_id_shots", type=int)
    p.add_argument("--eval_batch_size", type=int)

    p = commands["verify"] = add("verify", "Reload a finished run's adapters in this process and compare their logits "
                                 "with the saved reference predictions (exit 1 if any differs).")
    p.add_argument("output_dir")
    p = commands["report"] = add("report", "Markdown table of finished runs.")
    p.add_argument("output_dirs", nargs="+", metavar="OUTPUT_DIR")
    p = commands["push"] = add("push", "Upload a finished run's adapters, class statistics, task keys, results, plot "
                               "and model card to the Hub (not its resume state).")
    p.add_argument("output_dir")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true", default=None, help="create the repository private")
    p.add_argument("--token", help="Hub token (default: the logged-in one)")
    return parser, commands


def configure_logging(verbose: bool = False) -> None:
    """peft_memory's messages at INFO; transformers' load reports and progress bars and datasets' map bars only
    when ``verbose``."""
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.WARNING)
    logging.getLogger("peft_memory").setLevel(logging.INFO)
    if verbose:
        return
    # PEFT reads transformers' deprecated `is_gradient_checkpointing` (FutureWarning on every adapter): not ours to fix.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def format_matrix(results: RunResults) -> str:
    """The accuracy matrix (%) and the summary metrics, as text."""
    names = results.task_names[: len(results.accuracy_matrix)]
    lines = [f"Class-incremental accuracy matrix (%), task identity: {results.task_identity.mode}, "
             f"{results.task_identity.note}", "".ljust(10) + "".join(n[:9].rjust(10) for n in names)]
    for name, row in zip(names, results.accuracy_matrix):
        lines.append(name[:9].ljust(10) + "".join(("" if v is None else f"{100 * v:.1f}").rjust(10) for v in row))
    for key in ("average_accuracy", "forgetting", "backward_transfer", "cil_accuracy", "til_accuracy",
                "task_id_accuracy"):
        value = getattr(results, key)
        lines.append(f"{key:>20}: " + ("n/a" if value is None else f"{100 * value:.2f}"))
    return "\n".join(lines)


def train(args: ContinualArguments) -> RunResults:
    """Run ``peft-memory train`` with parsed arguments; writes the model card, pushes when asked."""
    from .run.hub import push_run_to_hub, write_model_card
    from .run.launch import build_trainer

    trainer = build_trainer(args)
    results = trainer.run()
    if trainer.accelerator.is_main_process:
        logger.info("\n" + format_matrix(results))
        write_model_card(args.output_dir)
        if args.push_to_hub:
            logger.info(f"pushed: {push_run_to_hub(args.output_dir, args.push_to_hub)}")
    return results


#: Errors with a message written for the user: one line on stderr (exit 1) unless --debug.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, FloatingPointError)


def main(argv: list[str] | None = None) -> int:
    """Run one ``peft-memory`` command; returns the exit code. Flag errors exit 2 with the usage line (argparse);
    a :data:`USER_ERRORS` error prints ``peft-memory COMMAND: error: ...`` and returns 1, with the traceback only
    under ``--debug`` or ``PEFT_MEMORY_DEBUG=1``."""
    parser, commands = build_parser()
    ns, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if extra:  # reported by the subcommand's parser, whose usage line fits the mistake
        commands[ns.command].error(f"unrecognized arguments: {' '.join(extra)}")
    args = None
    if ns.command == "train":
        try:
            args = ContinualArguments(**{f.name: getattr(ns, f.name) for f in fields(ContinualArguments)})
        except ValueError as err:
            commands["train"].error(str(err))
    configure_logging(getattr(ns, "verbose", False))
    try:
        return run_command(ns, args)
    except USER_ERRORS as err:
        if ns.debug or os.environ.get("PEFT_MEMORY_DEBUG", "") not in ("", "0"):
            raise
        print(f"{commands[ns.command].prog}: error: {err}", file=sys.stderr)
        return 1


def run_command(ns: argparse.Namespace, args: ContinualArguments | None) -> int:
    """The parsed command ``ns.command`` (``args``: ``train``'s arguments)."""
    if ns.command == "train":
        train(args)
        return 0
    if ns.command == "evaluate":
        from .run.launch import evaluate_run

        settings = {k: v for k, v in vars(ns).items()
                    if k not in ("command", "debug", "run_dir", "output_dir") and v is not None}
        logger.info("\n" + format_matrix(evaluate_run(ns.run_dir, ns.output_dir, **settings)))
        return 0
    if ns.command == "verify":
        from .run.reference import verify_run

        diffs = verify_run(ns.output_dir)
        print(json.dumps({"max_abs_logit_diff": diffs}))
        return 0 if all(d == 0.0 for d in diffs.values()) else 1
    if ns.command == "report":
        from .run.report import markdown_table

        print(markdown_table(ns.output_dirs))
        return 0
    if ns.command == "push":
        from .run.hub import push_run_to_hub

        print(json.dumps({"commit": str(push_run_to_hub(ns.output_dir, ns.repo_id, ns.private, ns.token))}))
        return 0
    raise AssertionError(f"unhandled command {ns.command!r}")


if __name__ == "__main__":
    sys.exit(main())
