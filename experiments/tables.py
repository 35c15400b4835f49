"""The tables of ``python -m experiments compare-table``: mean and spread over the committed slices of every
(method, rule) row (docs/results.md), the rows that chose each method's recipe (docs/results.md), and README's "Which
method?" table."""

from __future__ import annotations

import os
import statistics
from typing import NamedTuple

from peft_memory.continual import METHODS, ContinualArguments
from peft_memory.continual.inference.declaration import Inference, valid_settings
from peft_memory.continual.inference.metrics import accuracy_curve
from peft_memory.continual.methods.joint import JOINT_GAUSSIAN, JOINT_HEAD
from peft_memory.continual.run.checkpoint import read_json
from peft_memory.continual.run.plots import plot_accuracy_curves
from peft_memory.continual.run.results import method_label

from .compare import PLAN, PROTOCOL_FLAGS, _protocol

METRICS = (("average_accuracy", "CIL"), ("til_average_accuracy", "TIL"), ("forgetting", "forgetting"),
           ("task_id_accuracy", "task-id"))
#: ``(row label, task identity)`` of the upper-bound candidates: the joint adapters read by their heads and, with
#: ``--first_session_adaptation``, by the Gaussian classifier on the frozen and jointly adapted query; the frozen
#: Gaussian classifier.
UPPER_BOUNDS = (("joint", JOINT_HEAD), ("joint_full", JOINT_HEAD), ("joint (first-session)", JOINT_GAUSSIAN),
                ("joint_full (first-session)", JOINT_GAUSSIAN), ("simple_cil", "gaussian"))


def mean_std(values: list[float | None]) -> str:
    """Fractions as a table cell in percent: ``mean ± std`` over the values given (``None`` skipped), the value alone
    for one, ``n/a`` for none."""
    values = [100 * v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


class Row(NamedTuple):
    """One row of the table: a method and its task-identity and CIL rules."""

    method: str
    task_identity: str
    cil_rule: str

    @property
    def name(self) -> str:
        """The method column, e.g. ``soft_mask (first-session)``."""
        return self.method


def mixed_settings(found: list[tuple[str, tuple]]) -> str:
    """The :data:`PROTOCOL_FLAGS` whose recorded values differ among ``found`` (``(file, protocol)`` pairs), each with
    its values and the first file holding each, e.g. ``num_epochs=3 (seed_0/lora.json), num_epochs=1 (...)``; empty
    when every file shares them (a value a file does not record, ``None``, agrees with any)."""
    parts = []
    for i, flag in enumerate(PROTOCOL_FLAGS):
        first: dict = {}
        for path, protocol in found:
            if protocol[i] is not None:
                first.setdefault(protocol[i], path)
        if len(first) > 1:
            parts.append(", ".join(f"{flag}={value} ({path})" for value, path in first.items()))
    return "; ".join(parts)


def collect(results_dir: str, benchmark: str) -> dict[Row, dict[int, dict]]:
    """``{row: {seed: results}}`` of the committed slices of ``benchmark``.

    Raises:
        ValueError: if the results were made under different :data:`PROTOCOL_FLAGS` values (a slice of another
            model, data size, epochs, pooling...): a table never mixes them; the message names the flag, its values
            and a file of each.
    """
    found = []
    root = os.path.join(results_dir, benchmark)
    for seed_dir in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        seed = int(seed_dir.removeprefix("seed_"))
        for name in sorted(os.listdir(os.path.join(root, seed_dir))):
            r = read_json(os.path.join(root, seed_dir, name), "delete it: peft-memory compare runs it again")
            found.append((seed, os.path.join(seed_dir, name), r))
    mixed = mixed_settings([(path, _protocol(r.get("config", {}))) for _, path, r in found])
    if mixed:
        raise ValueError(f"{root} mixes results made under different settings: {mixed}. A table averages one "
                         "setting only: move the results of the other into their own results folder (or delete "
                         "them, and peft-memory compare makes them again with the current settings).")
    rows: dict = {}
    for seed, _, r in found:
        ti = r["task_identity"]
        row = Row(method_label(r["method"], r.get("config", {})), ti["mode"] + ("" if ti["per_sample"] else " BATCH-WISE"),
                  ti.get("cil_rule", "routed"))
        rows.setdefault(row, {})[seed] = r
    return rows


def best_bound(rows: dict[Row, dict[int, dict]]) -> tuple[Row, float] | None:
    """The row of :data:`UPPER_BOUNDS` with the highest mean CIL over its seeds, and that mean; None if no bound ran."""
    means = {row: statistics.mean(r["average_accuracy"] for r in runs.values()) for row, runs in rows.items()
             if (row.method, row.task_identity) in UPPER_BOUNDS}
    return max(means.items(), key=lambda item: item[1]) if means else None


def markdown_table(results_dir: str, benchmark: str, rows: dict[Row, dict[int, dict]] | None = None) -> str:
    """Mean ± standard deviation over the committed seeds of each (method, rule) row, in percent; the upper bound
    is the best of :data:`UPPER_BOUNDS`: joint soft masks and joint full fine-tuning (each read by its head and by
    the Gaussian classifier) and the frozen Gaussian classifier. ``rows``: :func:`collect`'s answer, when the caller
    read it already."""
    rows = collect(results_dir, benchmark) if rows is None else rows
    if not rows:
        return f"(no slice of {benchmark} committed under {results_dir})"
    best_bound_row = (best_bound(rows) or (None,))[0]
    lines = ["| method | task identity | CIL rule | " + " | ".join(m[1] for m in METRICS) + " | seeds |",
             "|---|---|---|" + "---|" * len(METRICS) + "---|"]
    for row in sorted(rows, key=lambda row: (PLAN_ORDER.get(row.method.split(" ")[0], 99), *row)):
        runs = rows[row]
        method = f"**{row.name}** (upper bound)" if row == best_bound_row else row.name
        cells = [mean_std([r.get(m) for r in runs.values()]) for m, _ in METRICS]
        lines.append(f"| {method} | {row.task_identity} | {row.cil_rule} | " + " | ".join(cells)
                     + f" | {','.join(map(str, runs))} |")
    return "\n".join(lines)


PLAN_ORDER: dict[str, int] = {}
for _i, _run in enumerate(PLAN):  # a method's first run places it; its variants' rows follow its own
    PLAN_ORDER.setdefault(_run.method, _i)



def update_markdown(path: str, name: str, text: str) -> str:
    """Replace the text between ``<!-- name -->`` and ``<!-- /name -->`` in ``path`` with ``text``; returns it.

    Raises:
        ValueError: if ``path`` lacks the markers.
    """
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    with open(path, encoding="utf-8") as f:
        content = f.read()
    if start not in content or end not in content:
        raise ValueError(f"{path} has no {start} ... {end} markers; add them where the table goes.")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{start}\n{text}\n{end}{tail}")
    return text


def update_readme(path: str, results_dir: str, benchmark: str) -> str:
    """Write :func:`markdown_table` of ``benchmark`` between ``<!-- compare:<benchmark> -->`` and
    ``<!-- /compare:<benchmark> -->`` in ``path`` (docs/results.md); returns the table.

    Raises:
        ValueError: if ``path`` lacks the markers.
    """
    return update_markdown(path, f"compare:{benchmark}", markdown_table(results_dir, benchmark))


# ------------------------------------------------------------------ recipes and "Which method?"
#: The sequences every recipe is measured on, as tables name them.
SEQUENCES = {"wordnet": "WordNet", "fashion_mnist": "Fashion-MNIST"}
#: Other sequences, as tables and plots name them.
NAMES = {**SEQUENCES, "wordnet_10split": "WordNet, 10 tasks", "wordnet_pooler_output": "WordNet (pooler output)"}


def setting_row(method: str, setting: Inference) -> Row:
    """The table row that a run of ``method`` with ``setting`` writes."""
    mode = METHODS[method](ContinualArguments()).task_identity_mode(setting.task_id_mode)
    return Row(method_label(method, {"first_session_adaptation": setting.first_session_adaptation}),
               mode + (" BATCH-WISE" if setting.batchwise else ""), setting.cil_rule)


def measured_settings(results_dir: str, method: str) -> list[tuple[Inference, dict[str, float]]]:
    """``method``'s settings measured on every sequence of :data:`SEQUENCES`, each with its mean CIL per sequence
    (over the committed seeds), best mean over the sequences first."""
    rows = {b: collect(results_dir, b) for b in SEQUENCES}
    out = []
    for setting in valid_settings(METHODS[method].provides):
        row = setting_row(method, setting)
        if all(row in rows[b] for b in SEQUENCES):
            out.append((setting, {b: statistics.mean(r["average_accuracy"] for r in rows[b][row].values())
                                  for b in SEQUENCES}))
    return sorted(out, key=lambda item: -statistics.mean(item[1].values()))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def recipes_table(results_dir: str) -> str:
    """Each method's recommended recipe (default), its mean CIL per sequence and over both, the next best measured
    setting and the paper recipe: the rows that decided the defaults."""
    head = ("| method | recommended (default) | " + " | ".join(SEQUENCES.values())
            + " | mean | next best measured | its mean | paper recipe | its mean |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for method, cls in METHODS.items():
        ranked = measured_settings(results_dir, method)
        means = {s: statistics.mean(v.values()) for s, v in ranked}
        rec, paper = cls.recipes["recommended"], cls.recipes["paper"]
        if rec not in means:
            lines.append(f"| {method} | {rec.label} | not measured |" + " |" * 6)
            continue
        per = dict(ranked)[rec]
        other = next(((s, m) for s, m in means.items() if s != rec), None)
        lines.append(
            f"| {method} | {rec.label} | " + " | ".join(_pct(per[b]) for b in SEQUENCES) + f" | {_pct(means[rec])} | "
            + (f"{other[0].label} | {_pct(other[1])}" if other else "none | ") + " | "
            + (f"{paper.label} | {_pct(means[paper])}" if paper in means else f"{paper.label} | not measured") + " |")
    return "\n".join(lines)


#: README's advice per method, one sentence each (the numbers are in the table beside it).
WHEN_TO_PICK = {
    "soft_mask": "The default: best on text, near the best on images. Per task: real-valued masks on the attention "
                 "weights of the last three layers.",
    "soft_mask_prompts": "Soft-TransFormers' own pairing of masks with DualPrompt's prompts; no gain over masks alone "
                         "on these sequences.",
    "dual_prompt": "Prompts and a key per task, the smallest adapters (prefix tuning).",
    "lora": "PEFT's own LoRA adapters, one per task, if your tooling expects LoRA.",
    "head_only": "A head per task on the frozen encoder: the cheapest trained adapter.",
    "memory_token": "Every task in one forward pass (Sandler et al.); the weakest here.",
    "simple_cil": "APER: only the first task trains, then class statistics; best on images here, the cheapest to grow.",
    "ranpac": "No training: a random projection of the frozen feature and a ridge classifier.",
}
#: The baselines under the methods: label, method, setting.
BASELINES = (("SimpleCIL (nearest class mean, no training)", "simple_cil", Inference("nearest_mean", "unified")),
             ("Frozen Gaussian classifier (no training)", "simple_cil", Inference("gaussian", "unified")))


def which_method_table(results_dir: str) -> str:
    """README's "Which method?": each method's default (its recommended recipe) with its mean CIL on both sequences
    and when to pick it, then the training-free baselines and the upper bound."""
    rows = {b: collect(results_dir, b) for b in SEQUENCES}

    def cells(method, setting):
        row = setting_row(method, setting)
        return " | ".join(mean_std([r["average_accuracy"] for r in rows[b].get(row, {}).values()]) for b in SEQUENCES)

    lines = ["| method | default inference | " + " | ".join(f"{n} CIL" for n in SEQUENCES.values()) + " | pick it when |",
             "|---|---|---|---|---|"]
    for method, when in WHEN_TO_PICK.items():
        setting = METHODS[method].recipes["recommended"]
        lines.append(f"| `{method}` | {setting.label} | {cells(method, setting)} | {when} |")
    for label, method, setting in BASELINES:
        lines.append(f"| {label} | `{method}` {setting.label} | {cells(method, setting)} | baseline |")
    bound = Inference("gaussian", "unified", first_session_adaptation=True)
    lines.append(f"| Upper bound: one adapter on every class at once | `joint` {bound.label} | {cells('joint', bound)}"
                 " | not continual |")
    return "\n".join(lines)


def curve_plot(results_dir: str, benchmark: str, path: str, rows: dict[Row, dict[int, dict]] | None = None) -> list[str]:
    """The class-incremental accuracy after each task (mean over the committed seeds, their spread as a band) of
    each method's default and of the training-free baselines, with the upper bound (:data:`UPPER_BOUNDS`, as the
    table marks it) as a level, drawn to ``path``; returns the lines drawn (none: nothing is written). ``rows``:
    :func:`collect`'s answer, when the caller read it already."""
    rows = collect(results_dir, benchmark) if rows is None else rows
    entries = [(f"{method} (default)", setting_row(method, METHODS[method].recipes["recommended"]))
               for method in WHEN_TO_PICK] + [(label.split(" (")[0], setting_row(method, setting))
                                              for label, method, setting in BASELINES]
    curves = {}
    for label, row in entries:
        runs = [accuracy_curve(r["accuracy_matrix"]) for r in rows.get(row, {}).values() if r.get("accuracy_matrix")]
        if runs and len({len(c) for c in runs}) == 1:
            columns = list(zip(*runs))
            curves[label] = ([statistics.mean(c) for c in columns],
                             [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns])
    best = best_bound(rows)
    bounds = {f"upper bound: {best[0].name}": best[1]} if best else {}
    if curves:
        seeds = sorted({seed for runs in rows.values() for seed in runs})
        plot_accuracy_curves(curves, path, f"{NAMES.get(benchmark, benchmark)}: CIL after each task "
                             f"(seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})", bounds)
    return list(curves)


def reproduce_table(report_dir: str) -> str:
    """The reports of ``python -m experiments reproduce`` (``make reproduce``): each run with a recipe and no other
    flag against the committed row of its setting."""
    lines = ["| sequence | method | recipe | inference | CIL reproduced | CIL committed | matrices identical | "
             "transformers (reproduced / committed) |", "|---|---|---|---|---|---|---|---|"]
    for root, _, names in sorted(os.walk(report_dir)):
        for name in sorted(n for n in names if n.endswith(".json")):
            r = read_json(os.path.join(root, name), "delete it: make reproduce writes it again")
            acc = r["average_accuracy"]
            lines.append(f"| {SEQUENCES.get(r['benchmark'], r['benchmark'])} (seed {r['seed']}) | `{r['method']}` | "
                         f"{r['recipe']} | {r['setting']} | {_pct(acc['reproduced'])} | {_pct(acc['committed'])} | "
                         f"{'yes' if all(r['identical'].values()) else 'no'} | "
                         f"{r.get('versions', {}).get('transformers', '?')} / "
                         f"{(r.get('committed_versions') or {}).get('transformers', '?')} |")
    return "\n".join(lines)


def write_tables(results_dir: str, benchmarks: list[str] | None = None, results: str | None = None,
                 readme: str | None = None, report_dir: str | None = None) -> str:
    """The tables of ``benchmarks`` (default: every folder of ``results_dir``), written into ``results``
    (docs/results.md: each benchmark's table, the recipes' rows and the reproduced defaults of ``report_dir``) and
    ``readme`` (the "Which method?" table) when given; returns what was made, as text.

    Raises:
        ValueError: if ``results_dir`` holds no slice (a mistyped folder must not blank the tables), or a file lacks
            its markers.
    """
    found = sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []
    benchmarks = benchmarks or found
    missing = [b for b in benchmarks if b not in found]
    if not found or missing:
        raise ValueError(f"{results_dir} holds no committed slice of {missing or 'any benchmark'}; pass the folder "
                         "peft-memory compare wrote (results/compare).")
    parts = []
    for benchmark in benchmarks:
        rows = collect(results_dir, benchmark)
        table = markdown_table(results_dir, benchmark, rows)
        if results:
            update_markdown(results, f"compare:{benchmark}", table)
            image = os.path.join(os.path.dirname(results), "images", f"cil_curve_{benchmark}.png")
            os.makedirs(os.path.dirname(image), exist_ok=True)
            if curve_plot(results_dir, benchmark, image, rows):
                parts.append(f"{benchmark}: {image}")
        parts.append(f"{benchmark}:\n{table}")
    if all(b in found for b in SEQUENCES):
        recipes, which = recipes_table(results_dir), which_method_table(results_dir)
        if results:
            update_markdown(results, "recipes", recipes)
        if readme:
            update_markdown(readme, "which-method", which)
        parts += [f"recipes:\n{recipes}", f"which method:\n{which}"]
    if report_dir and os.path.isdir(report_dir):
        reproduced = reproduce_table(report_dir)
        if results:
            update_markdown(results, "reproduce", reproduced)
        parts.append(f"reproduced:\n{reproduced}")
    return "\n\n".join(parts)
