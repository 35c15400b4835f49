"""``peft-memory`` command line: one argparse parser with a subcommand per task (``train``, ``evaluate``, ``verify``,
``report``, ``push``, ``predict``). The research harness (``compare``, ``tune``, ``compare-table``) lives outside the package, in
the repository's ``experiments/``. ``train``'s flags are the fields of
:class:`~peft_memory.continual.run.arguments.ContinualArguments`, grouped as in ``--help`` by ``HfArgumentParser``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from _pickle import UnpicklingError  # what a weights-only torch loader raises; nothing is unpickled here
from dataclasses import fields

from accelerate.logging import get_logger

from .inference.declaration import CIL_RULES
from .inference.task_id import RULES
from .methods import METHODS
from .run.arguments import BASIC_FLAGS, ContinualArguments, make_parser
from .run.loading import BENCHMARKS
from .run.results import RunResults
from .run.spec import RunSpec

logger = get_logger("peft_memory.continual.cli")  # by name: `python -m` runs this module as __main__; main process


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


class HelpAll(argparse.Action):
    """``--help-all``: show every flag, the research settings that ``--help`` hides included, and exit."""

    def __init__(self, option_strings, dest, hidden=(), **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.hidden = hidden

    def __call__(self, parser, namespace, values, option_string=None):
        for action, text in self.hidden:
            action.help = text
        parser.print_help()
        parser.exit()


def hide_research_flags(parser: argparse.ArgumentParser) -> list[tuple[argparse.Action, str]]:
    """Hide from ``--help`` every flag of ``train`` but :data:`~.run.arguments.BASIC_FLAGS`; returns the hidden actions
    with their help texts (for ``--help-all``)."""
    hidden = []
    for action in parser._actions:
        if action.option_strings and action.dest not in (*BASIC_FLAGS, "help", "config"):
            hidden.append((action, action.help))
            action.help = argparse.SUPPRESS
    return hidden


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``peft-memory`` parser and its subcommand parsers by name."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="peft-memory", description="Continual learning with PEFT adapters: one "
                                     "adapter per task, class-incremental evaluation with per-sample task identity.")
    parser.add_argument("--version", action="version", version=f"peft_memory {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also: environment variable PEFT_MEMORY_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help, **kw):
        return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter, **kw)

    train = add(
        "train", "Train one adapter per task of a class-incremental sequence and evaluate every task seen after each "
        "one.", parents=[make_parser(add_help=False)],
        epilog="Research settings (task-identity and CIL rules, class statistics, prompts, each method's own "
        "options, optimisation details) keep their recipe's or the measured defaults: --help-all lists them, "
        "docs/continual.md explains them.")
    commands = {"train": train}
    _set_choices(train, {"--method": sorted(METHODS), "--benchmark": list(BENCHMARKS),
                         "--task_id_mode": sorted(RULES), "--cil_rule": list(CIL_RULES)})
    train.add_argument("--config", metavar="FILE", help="A YAML or JSON file of train's settings (the run.yaml every "
                       "finished run writes, say); flags on the command line override it.")
    train.add_argument("--help-all", action=HelpAll, hidden=hide_research_flags(train),
                       help="Show every flag, the research settings included, and exit.")

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

    p = commands["predict"] = add("predict", "Classify a dataset with a finished run (a folder, or a Hub repo push "
                                  "made): its columns plus label, score and task, per input.")
    p.add_argument("run", help="the finished run's folder, or its Hub repo id")
    p.add_argument("--dataset", required=True, help="what to classify: anything train --dataset reads (a csv / json "
                   "/ parquet file or folder, an imagefolder, a hub id), labelled or not")
    p.add_argument("--output", required=True, help="predictions.csv or .jsonl (its metrics and confusion matrix go "
                   "beside it when the data have labels)")
    p.add_argument("--split", default="test", help="the split to classify (a single file's one split regardless)")
    p.add_argument("--text_column", help="the column holding the text (default: 'text')")
    p.add_argument("--image_column", help="the column holding the images (default: the datasets.Image column)")
    p.add_argument("--label_column", default="label", help="the true classes, if any: accuracy and confusion matrix")
    p.add_argument("--top_k", type=int, default=1, help="also write the k classes the rule ranks first")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--dataset_config_name", help="--dataset's configuration name")

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


def train(args: ContinualArguments | RunSpec) -> RunResults:
    """Run ``peft-memory train`` with parsed arguments; writes the model card, pushes when asked."""
    from .run.hub import push_run_to_hub, write_model_card
    from .run.launch import build_trainer

    trainer = build_trainer(args)
    args = trainer.args
    results = trainer.run()
    if trainer.accelerator.is_main_process:
        logger.info("\n" + format_matrix(results))
        write_model_card(args.output_dir)
        if args.push_to_hub:
            logger.info(f"pushed: {push_run_to_hub(args.output_dir, args.push_to_hub)}")
    return results


def read_config_file(path: str, parser: argparse.ArgumentParser) -> dict:
    """The settings of a ``--config`` file (YAML or JSON: a mapping of train's flags without ``--``), each value
    converted as its flag's would be on the command line.

    Raises:
        ValueError: naming the file and the fix if it cannot be read, is not a mapping, names an unknown setting,
            or holds a value its flag refuses.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            settings = yaml.safe_load(f)  # JSON is YAML
    except OSError as err:
        raise ValueError(f"--config {path} cannot be read ({err.strerror}).") from err
    except yaml.YAMLError as err:
        raise ValueError(f"--config {path} is not valid YAML or JSON ({err}).") from err
    if not isinstance(settings, dict):
        raise ValueError(f"--config {path} must hold a mapping of train's settings (e.g. 'num_epochs: 3').")
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    unknown = sorted(k for k in settings if k not in actions or k in ("help", "config", "help_all"))
    if unknown:
        raise ValueError(f"--config {path} names unknown settings {unknown}; the settings are train's flags without "
                         "'--' (peft-memory train --help-all).")
    out = {}
    for key, value in settings.items():
        action = actions[key]
        convert = action.type if callable(action.type) else None
        try:
            if convert is not None and isinstance(value, str):
                value = convert(value)
            elif convert is not None and isinstance(value, list):
                value = [convert(v) if isinstance(v, str) else v for v in value]
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            raise ValueError(f"--config {path}: {key}: {value!r} is not a valid value ({err}).") from err
        if action.choices is not None and value is not None and value not in action.choices:
            raise ValueError(f"--config {path}: {key}: {value!r} is not one of {list(action.choices)}.")
        out[key] = value
    return out


#: Errors with a message written for the user: one line on stderr (exit 1) unless --debug. ``OSError`` covers
#: missing files, permissions, symlink loops and the Hub offline (``requests``' and ``huggingface_hub``'s connection
#: errors); ``UnpicklingError``, a pickled base model that the weights-only torch loader refuses.
USER_ERRORS = (ValueError, OSError, FloatingPointError, UnpicklingError)


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (a connection error's message spans several), prefixed by its type for errors
    raised by the libraries (connection, symlink loop, unpickling), whose message alone may not say what failed."""
    text = " ".join(str(err).split()) or type(err).__name__
    ours = (ValueError, FileNotFoundError, PermissionError, FloatingPointError)  # messages written for the user
    return text if isinstance(err, ours) else f"{type(err).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    """Run one ``peft-memory`` command; returns the exit code. Flag errors exit 2 with the usage line (argparse);
    a :data:`USER_ERRORS` error prints ``peft-memory COMMAND: error: ...`` and returns 1, with the traceback only
    under ``--debug`` or ``PEFT_MEMORY_DEBUG=1``."""
    parser, commands = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    ns, extra = parser.parse_known_args(argv)
    if ns.command == "train" and ns.config:  # the file's settings become defaults; the command line overrides them
        try:
            commands["train"].set_defaults(**read_config_file(ns.config, commands["train"]))
        except ValueError as err:
            commands["train"].error(str(err))
        ns, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, whose usage line fits the mistake
        commands[ns.command].error(f"unrecognized arguments: {' '.join(extra)}")
    args = None
    if ns.command == "train":  # every flag and the inference setting checked before anything loads (exit 2)
        try:
            args = RunSpec.resolve(ContinualArguments(**{f.name: getattr(ns, f.name)
                                                        for f in fields(ContinualArguments)}))
            if not args.args.continue_from:  # a grown run's model is the old run's: checked when it is read
                from .run.loading import check_model_limits

                check_model_limits(args.args)  # the model's config only
        except ValueError as err:
            commands["train"].error(str(err))
    configure_logging(getattr(ns, "verbose", False))
    try:
        return run_command(ns, args)
    except KeyboardInterrupt:
        if ns.debug:
            raise
        kept = {"train": "the finished tasks are kept: the same command with --resume continues the run",
                "evaluate": "no results.json was written"}.get(ns.command, "nothing was written")
        print(f"{commands[ns.command].prog}: interrupted; {kept}.", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if ns.debug or os.environ.get("PEFT_MEMORY_DEBUG", "") not in ("", "0"):
            raise
        print(f"{commands[ns.command].prog}: error: {one_line(err)}", file=sys.stderr)
        return 1


def run_command(ns: argparse.Namespace, args: RunSpec | None) -> int:
    """The parsed command ``ns.command`` (``args``: ``train``'s resolved arguments)."""
    if ns.command == "train":
        train(args)
        return 0
    if ns.command == "evaluate":
        from .run.launch import evaluate_run

        settings = {k: v for k, v in vars(ns).items()
                    if k not in ("command", "debug", "run_dir", "output_dir") and v is not None}
        logger.info("\n" + format_matrix(evaluate_run(ns.run_dir, ns.output_dir, **settings)))
        return 0
    if ns.command == "predict":
        from accelerate import PartialState

        from .run.predictor import ContinualClassifier, predict_dataset

        classifier = ContinualClassifier.from_pretrained(ns.run, device=PartialState().device)
        metrics = predict_dataset(classifier, ns.dataset, ns.output, ns.split, ns.text_column, ns.image_column,
                                  ns.label_column, ns.top_k, ns.batch_size, ns.dataset_config_name)
        if metrics:
            logger.info(f"accuracy {100 * metrics['accuracy']:.2f}% over {metrics['num_inputs']} inputs; "
                        f"per class and confusion matrix: {os.path.splitext(ns.output)[0]}.metrics.json")
        logger.info(f"predictions: {ns.output}")
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
