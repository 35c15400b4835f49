"""How each task-identity rule's test pass grows with the number of tasks, and the class-statistics rule vs Prompt-ID.

    python bench/task_identity_scaling.py                    # MiniLM-L6 shape, T = 5, 10, 20, 50
    python bench/task_identity_scaling.py --tiny --reps 1    # smoke run (CI)

A test pass = task identity for a batch (per sample) + the routed forward that classifies it. Adapters are
DualPrompt-Soft-TF ones of tiny width (soft masks on the last layer, prompts of length 1, two classes) on the real
shape, so 50 of them fit; the rules are the trainer's own objects (``peft_memory.continual.inference.task_id``), the class
statistics built from random features (their values do not change the cost). Prints RESULTS.md-style rows.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from peft import get_peft_model

import peft_memory  # noqa: F401
from peft_memory import SoftMaskConfig
from peft_memory.class_statistics import STATISTICS_FILE, StatisticsAccumulator
from peft_memory.continual import ContinualMethod, Task, get_rule
from peft_memory.continual.inference.evaluation import EvalContext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Row, alternate, machine  # noqa: E402
from models import SHAPES, describe, make  # noqa: E402

#: ``{row label: (rule, first-session query)}``; ``gaussian_first_session``: ``--first_session_adaptation``'s query
#: (the frozen one and the first task adapter's, two forwards).
RULES = {"gradient_id": ("gradient_id", False), "prompt_id": ("prompt_id", False), "gaussian": ("gaussian", False),
         "gaussian_first_session": ("gaussian", True)}
GOALS = {"gaussian": "<= 1.05x"}


def adapters(shape: str, num_tasks: int, device: str):
    base, inputs = make(shape, device=device)
    n = SHAPES[shape][1]["num_hidden_layers"]

    def config():
        return SoftMaskConfig(num_labels=2, use_prompts=True, layers_to_transform=[n - 1], g_prompt_length=1,
                              e_prompt_length=1, g_prompt_layers=[0], e_prompt_layers=[1], init_weights=False)

    model = get_peft_model(base, config(), "task_0")
    for t in range(1, num_tasks):
        model.add_adapter(f"task_{t}", config())
    return model.eval(), inputs


def context(model, inputs, rule: str, num_tasks: int, first_session: bool = False) -> EvalContext:
    tasks = [Task(f"task_{t}", ["a", "b"], [None], [None], [2 * t, 2 * t + 1]) for t in range(num_tasks)]
    hidden = model.get_base_model().config.hidden_size * (2 if first_session else 1)
    acc = StatisticsAccumulator(list(range(2 * num_tasks)), hidden)
    g = torch.Generator().manual_seed(0)
    acc.add(torch.randn(8 * num_tasks, hidden, generator=g), torch.arange(8 * num_tasks) % (2 * num_tasks))
    return EvalContext(model, tasks, tasks, method=ContinualMethod(None), rule=get_rule(rule),
                       statistics={STATISTICS_FILE: acc.statistics()}, query_pooling="classifier",
                       first_task="task_0" if first_session else None)


def test_pass(ctx: EvalContext, inputs: dict):
    def run():
        task = ctx.rule.infer(ctx, inputs)
        with torch.no_grad():
            ctx.model(**inputs, adapter_names=[ctx.names[t] for t in task.tolist()])
    return run


def measure(shape: str, reps: int, tasks=(5, 10, 20, 50), device: str = "cpu") -> list[Row]:
    rows, first = [], {}
    for num_tasks in tasks:
        model, inputs = adapters(shape, num_tasks, device)
        fns = {}
        for label, (rule, first_session) in RULES.items():
            ctx = context(model, inputs, rule, num_tasks, first_session)
            ctx.rule.infer(ctx, inputs)  # builds the classifier once per evaluation, as the trainer does
            fns[label] = test_pass(ctx, inputs)
        t = alternate(fns, reps)
        for rule in RULES:
            first.setdefault(rule, t[rule])
            rows.append(Row(f"Test pass, {rule}, {num_tasks} tasks, vs Prompt-ID with {num_tasks} tasks",
                            t.ratio(rule, "prompt_id"), GOALS.get(rule, "reported"),
                            describe(shape), f"{t[rule]:.3f} s per batch; {t[rule] / first[rule]:.2f}x its own "
                            f"{tasks[0]}-task time"))
    return rows


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape, tasks = ("tiny-bert", (5, 10)) if args.tiny else ("minilm-l6", (5, 10, 20, 50))
    rows = measure(shape, args.reps, tasks, device)
    lines = [f"Machine: {machine()}. Command: `python bench/task_identity_scaling.py"
             + (" --tiny" if args.tiny else "") + f" --reps {args.reps}`; median of per-round ratios.", "",
             "| row | measured | goal | met | shapes | detail |", "|---|---|---|---|---|---|"]
    lines += [r.markdown() for r in rows]
    out = "\n".join(lines)
    print(out)
    return out


if __name__ == "__main__":
    main()
