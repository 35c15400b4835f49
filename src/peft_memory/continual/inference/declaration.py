"""What each inference setting needs and what a method's adapters provide, declared once.

An inference setting (:class:`Inference`) is a task-identity rule (``--task_id_mode``), a CIL rule (``--cil_rule``),
whether the class statistics read the first session's adapter (``--first_session_adaptation``) and whether task
identity is inferred per sample or per test batch (``--task_id_batchwise``). Each rule needs some capabilities
(:data:`CAPABILITIES`) of the method's adapters; a method declares the capabilities it provides
(``ContinualMethod.provides``). :func:`problems` derives from these tables whether a setting applies to a method,
:func:`valid_settings` lists every setting that does, and every check and error message of the package reads them
(:func:`check`): no other place decides validity.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

#: What a method's adapters can provide, with the words an error message uses for each.
CAPABILITIES = {
    "task_adapters": "one adapter per task to route a sample to",
    "task_heads": "a head per task whose logits can be compared",
    "head_bank": "task heads that all read one adapter's classifier input (DualPrompt's unified classifier)",
    "adapter_features": "each task adapter's classifier input, with its adapted statistics",
    "superposable": "adapters that mix with weights alpha_t (soft masks, prompts)",
    "keys": "a Prompt-ID key per task",
    "one_forward": "every task's class token and head in ONE forward (memory-token concatenation)",
    "class_statistics": "class statistics of the frozen query saved with every adapter",
    "projected_statistics": "class statistics of RanPAC's random projection",
    "single_classifier": "ONE classifier over every class seen, read directly",
    "adapts_backbone": "a first task adapter that changes the backbone's feature (APER's first session)",
}

#: ``--task_id_mode``: the capabilities each task-identity rule needs, and what it is (Sec. / paper).
TASK_ID_RULES = {
    "gradient_id": ({"superposable"}, "SupSup's one-shot entropy gradient over superposed adapters (Soft-TF Sec. 4)"),
    "prompt_id": ({"keys"}, "the key closest to the frozen query (DualPrompt Sec. 4.3)"),
    "max_logit": ({"task_heads"}, "the head with the largest logit"),
    "max_softmax": ({"one_forward"}, "the most confident head, every head in one forward (Sandler et al. Sec. 2.2)"),
    "nearest_mean": ({"class_statistics"}, "the nearest class mean, cosine (SimpleCIL)"),
    "gaussian": ({"class_statistics"}, "the shared-covariance Gaussian classifier (HiDe-Prompt's statistics)"),
    "ridge": ({"projected_statistics"}, "RanPAC's ridge classifier on the random projection (Eq. 4)"),
}
#: The task-identity rules that give a task posterior ``log p(t | x)`` (``combined`` and ``product`` re-score it).
TASK_POSTERIOR_RULES = ("gaussian",)
#: The task-identity rules that read the class statistics (``--first_session_adaptation`` changes their query).
STATISTICS_RULES = ("nearest_mean", "gaussian", "ridge")

#: ``--cil_rule``: alternatives of needed capabilities (any one suffices), and what it does.
CIL_RULES = {
    "routed": (({"task_adapters"},), "the inferred task's adapter, among that task's classes"),
    "unified": (({"head_bank"}, {"single_classifier"}),
                "the argmax over every seen class: the inferred adapter's feature through every seen head "
                "(DualPrompt's classifier), or the method's one classifier"),
    "combined": (({"adapter_features"},), "the class statistics' task posterior re-scored by the candidate tasks' "
                 "adapters; the chosen adapter's head gives the class"),
    "product": (({"adapter_features"},), "combined's task; the class by the head's posterior times the class "
                "statistics' (a product of experts)"),
}
#: The CIL rules that re-score a task posterior (:data:`TASK_POSTERIOR_RULES`).
RESCORING_RULES = ("combined", "product")
#: ``--recipe``: ``recommended`` (the default: the best configuration measured, docs/results.md) and ``paper`` (each
#: method's own paper's inference); each method declares the :class:`Inference` of both.
RECIPES = ("recommended", "paper")
#: The CIL rules under which one task id per test batch (``--task_id_batchwise``) is meaningful.
BATCHWISE_RULES = ("routed", "unified")


@dataclass(frozen=True)
class Inference:
    """One inference setting. ``task_id_mode`` and ``cil_rule`` name rules of :data:`TASK_ID_RULES` and
    :data:`CIL_RULES`; ``first_session_adaptation``: the class statistics' query gains the first task adapter's
    (APER, Zhou et al. IJCV 2024); ``batchwise``: one task id per test batch (labelled BATCH-WISE), not per sample."""

    task_id_mode: str
    cil_rule: str
    first_session_adaptation: bool = False
    batchwise: bool = False

    @property
    def label(self) -> str:
        """``gaussian + product (first-session)``, as tables and errors name it."""
        return (f"{self.task_id_mode} + {self.cil_rule}" + (" (first-session)" if self.first_session_adaptation else "")
                + (" BATCH-WISE" if self.batchwise else ""))


def declare_task_id_rule(name: str, needs: set[str], description: str) -> None:
    """Declare a new ``--task_id_mode`` (its class goes into ``peft_memory.continual.RULES``): the capabilities of
    :data:`CAPABILITIES` it needs from a method's adapters, and one line on what it does.

    Raises:
        ValueError: for a capability that is not declared.
    """
    unknown = sorted(set(needs) - set(CAPABILITIES))
    if unknown:
        raise ValueError(f"task-identity rule {name!r} needs {unknown}, which are no capabilities; choose among "
                         f"{sorted(CAPABILITIES)}.")
    TASK_ID_RULES[name] = (set(needs), description)


def _missing(needs: set[str], provides: frozenset[str]) -> list[str]:
    return sorted(needs - provides)


def problems(provides: frozenset[str], setting: Inference, implied: str | None = None,
             explicit: frozenset[str] = frozenset(("task_id_mode", "cil_rule", "first_session_adaptation"))) -> list[str]:
    """Why ``setting`` does not apply to adapters that provide ``provides`` (empty: it applies). Each entry names
    the flag and what is missing; a flag outside ``explicit`` is named as ``implied`` by (a recipe) when given.

    Raises:
        ValueError: for a rule name that is not declared (an unknown ``--task_id_mode`` or ``--cil_rule``).
    """
    if setting.task_id_mode not in TASK_ID_RULES:
        raise ValueError(f"--task_id_mode {setting.task_id_mode!r} is unknown; choose one of {sorted(TASK_ID_RULES)}.")
    if setting.cil_rule not in CIL_RULES:
        raise ValueError(f"--cil_rule {setting.cil_rule!r} is unknown; choose one of {list(CIL_RULES)}.")
    def flag(name: str, value=None) -> str:
        text = f"--{name}" + ("" if value is None else f" {value}")
        return text if implied is None or name in explicit else f"{text} ({implied}'s)"

    mode, rule = flag("task_id_mode", setting.task_id_mode), flag("cil_rule", setting.cil_rule)
    found = []
    missing = _missing(TASK_ID_RULES[setting.task_id_mode][0], provides)
    if missing:
        found.append(f"{mode} needs {', '.join(CAPABILITIES[m] for m in missing)}")
    alternatives = CIL_RULES[setting.cil_rule][0]
    if not any(needs <= provides for needs in alternatives):
        need = " or ".join(", ".join(CAPABILITIES[m] for m in sorted(n)) for n in alternatives)
        found.append(f"{rule} needs {need}")
    if setting.cil_rule in RESCORING_RULES and setting.task_id_mode not in TASK_POSTERIOR_RULES:
        found.append(f"{rule} re-scores a task posterior, which only --task_id_mode "
                     f"{' or '.join(TASK_POSTERIOR_RULES)} gives")
    if setting.first_session_adaptation:
        first = flag("first_session_adaptation")
        if "adapts_backbone" not in provides:
            found.append(f"{first} needs {CAPABILITIES['adapts_backbone']}")
        if setting.task_id_mode not in STATISTICS_RULES:
            found.append(f"{first} changes the class statistics' query, which {mode} does not read (use "
                         f"{' or '.join(STATISTICS_RULES)})")
    if setting.batchwise and (setting.cil_rule not in BATCHWISE_RULES or "task_adapters" not in provides):
        found.append(f"--task_id_batchwise gives one task per test batch to route to; --cil_rule "
                     f"{setting.cil_rule} with these adapters infers no such task")
    return found


def valid_settings(provides: frozenset[str], batchwise: bool = False) -> list[Inference]:
    """Every :class:`Inference` (per sample, or with ``batchwise`` per test batch) that applies to ``provides``,
    in the declaration's order."""
    out = []
    for mode, rule, first in product(TASK_ID_RULES, CIL_RULES, (False, True)):
        setting = Inference(mode, rule, first, batchwise)
        if not problems(provides, setting):
            out.append(setting)
    return out


def check(method: str, provides: frozenset[str], setting: Inference, implied: str | None = None,
          explicit: frozenset[str] = frozenset(("task_id_mode", "cil_rule", "first_session_adaptation"))) -> None:
    """Return if ``setting`` applies to ``--method method`` (whose adapters provide ``provides``); else raise. The
    flags outside ``explicit`` were filled in by ``implied`` (``--recipe recommended``, say): messages say so.

    Raises:
        ValueError: naming every problem (:func:`problems`) and the fix: the task-identity rules that apply to the
            method and, for the requested rule, the CIL rules and first-session settings that go with it.
    """
    found = problems(provides, setting, implied, explicit)
    if not found:
        return
    usable = valid_settings(provides)
    modes = list(dict.fromkeys(s.task_id_mode for s in usable))
    fix = f"with --method {method} use --task_id_mode {' | '.join(modes)}"
    same = [s for s in usable if s.task_id_mode == setting.task_id_mode]
    if same:
        rules = list(dict.fromkeys(s.cil_rule for s in same))
        fix += f"; with --task_id_mode {setting.task_id_mode}: --cil_rule {' | '.join(rules)}"
        if setting.first_session_adaptation and not any(s.first_session_adaptation for s in same):
            fix += ", without --first_session_adaptation"
    raise ValueError(f"--method {method}: {'; '.join(found)}. Fix: {fix}.")
