"""What ``ContinualClassifier.predict`` costs per batch, each method with its default recipe, as the number of tasks
grows, as a ratio to one plain forward of the base model on the same inputs.

    python bench/predict_cost.py                    # MiniLM-L6 shape, T = 5, 10, 25, 50
    python bench/predict_cost.py --tiny --reps 1    # smoke run (CI)

The limits: 1.0 for a classifier on frozen features (RanPAC-style); about 2 with a first-session feature (the frozen
query and the first adapter's); the combined and product rules add one adapter pass per re-scored candidate
(``--combine_top_k``, 3): with masks on the last 3 of 6 layers, 1 + 0.5 + 3 x 0.5 = 3.0. A predict pass is the method's ``predict_batch`` under the shared prefix, as
``ContinualClassifier`` runs it: the class statistics' query, then what the rule re-scores. Adapters are built on the
real shape (soft masks on the last three layers; memory tokens, one per layer; DualPrompt, Soft-TF prompts and LoRA
by the method itself with the default arguments, keys included), their class statistics from random features
(their values do not change the cost). Prints RESULTS.md-style rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile

import torch
from peft import get_peft_model

import peft_memory  # noqa: F401
from peft_memory import MemoryTokenConfig, SoftMaskConfig
from peft_memory.class_statistics import STATISTICS_FILE, StatisticsAccumulator
from peft_memory.continual import METHODS, ContinualArguments, Task, get_rule
from peft_memory.continual.inference.combined import ADAPTED_FILE
from peft_memory.continual.inference.evaluation import EvalContext
from peft_memory.continual.inference.outputs import OutputCache
from peft_memory.continual.inference.prefix import SharedPrefix

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Row, alternate, machine  # noqa: E402
from models import SHAPES, describe, make  # noqa: E402

#: The methods measured, each with its default (recommended) recipe; ``soft_mask/routed`` is its recipe with
#: ``--cil_rule routed`` (one adapter pass instead of the product rule's ``--combine_top_k`` 3 candidates).
BENCHED = ("soft_mask", "soft_mask/routed", "head_only", "simple_cil", "memory_token", "dual_prompt",
           "soft_mask_prompts", "lora")
#: Methods whose adapters are built by the method itself (``make_config`` and ``on_adapter_added`` with the default
#: arguments), as a run builds them.
OWN_CONFIG = ("dual_prompt", "soft_mask_prompts", "lora")


def setting_of(name: str):
    """The method and inference setting of a :data:`BENCHED` name."""
    method, _, rule = name.partition("/")
    setting = METHODS[method].recipes["recommended"]
    return method, dataclasses.replace(setting, cil_rule=rule) if rule else setting
CLASSES = 4  # per task


def statistics(dim: int, num_tasks: int, seed: int = 0) -> list:
    """Per task, a class-statistics accumulator's statistics of random features ``(8 per class, dim)``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(num_tasks):
        acc = StatisticsAccumulator(list(range(CLASSES * t, CLASSES * (t + 1))), dim)
        acc.add(torch.randn(8 * CLASSES, dim, generator=g), torch.arange(8 * CLASSES) % CLASSES)
        out.append(acc.statistics())
    return out


def context(name: str, shape: str, num_tasks: int, device: str):
    """The model with ``num_tasks`` adapters of ``name``'s method and the evaluation context of its setting."""
    base, inputs = make(shape, num_labels=CLASSES, device=device)
    method, setting = setting_of(name)
    n = SHAPES[shape][1]["num_hidden_layers"]
    tasks = [Task(f"task_{t}", [str(c) for c in range(CLASSES)], None, None,
                  list(range(CLASSES * t, CLASSES * (t + 1)))) for t in range(num_tasks)]
    impl = METHODS[method](ContinualArguments(method=method, query_pooling="classifier"))  # as the context below
    if method in OWN_CONFIG:
        def config(t=0):
            return impl.make_config(tasks[t], base)
    elif method == "memory_token":
        def config():
            return MemoryTokenConfig(num_labels=CLASSES, num_memory_tokens=1)
    elif method == "head_only":  # a head per task on the frozen encoder
        def config():
            return SoftMaskConfig(num_labels=CLASSES, target_modules=[])
    elif method == "simple_cil":  # the first task's masks (APER's first session), the others head-only records
        def config(t=0):
            return SoftMaskConfig(num_labels=CLASSES, target_modules=None if t == 0 else [], init_weights=False,
                                  layers_to_transform=list(range(n - 3, n)) if t == 0 else None)
    else:
        def config():
            return SoftMaskConfig(num_labels=CLASSES, layers_to_transform=list(range(n - 3, n)), init_weights=False)
    build = (lambda t: config(t)) if method in ("simple_cil", *OWN_CONFIG) else (lambda t: config())
    model = get_peft_model(base, build(0), "task_0")
    for t in range(num_tasks):
        if t:
            model.add_adapter(f"task_{t}", build(t))
        impl.on_adapter_added(model, tasks[t], device)
    model.eval()
    hidden = base.config.hidden_size
    query_dim = hidden * (2 if setting.first_session_adaptation else 1)
    per_task = [{STATISTICS_FILE: s} for s in statistics(query_dim, num_tasks)]
    if "adapter_features" in METHODS[method].provides:
        for record, adapted in zip(per_task, statistics(hidden, num_tasks, seed=1)):
            adapted.calibration = torch.tensor([0.0, 1.0], dtype=torch.float64)
            record[ADAPTED_FILE] = adapted
    from peft_memory.class_statistics import ClassStatistics

    ctx = EvalContext(model, tasks, tasks, impl, get_rule(setting.task_id_mode),
                      statistics={STATISTICS_FILE: ClassStatistics.compose([r[STATISTICS_FILE] for r in per_task])},
                      task_statistics=per_task, query_pooling="classifier",
                      first_task="task_0" if setting.first_session_adaptation else None, cil_rule=setting.cil_rule,
                      prefix=SharedPrefix(model))
    return model, inputs, ctx


def saved_sizes(model, ctx, folder: str) -> tuple[float, float]:
    """``(bytes per task on disk, bytes of the loaded adapters and statistics in memory)``: every adapter saved by
    PEFT's ``save_pretrained`` plus each task's class-statistics files (safetensors), over the number of tasks; the
    adapters' parameters and the composed statistics as loaded."""
    import glob

    model.save_pretrained(folder, selected_adapters=list(model.peft_config))
    for task, record in zip(ctx.tasks, ctx.task_statistics):
        for name, stats in record.items():
            stats.save(os.path.join(folder, task.name), name)
    on_disk = sum(os.path.getsize(p) for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                  if os.path.isfile(p))
    adapters = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "base_layer" not in n
                   and any(f".{t.name}" in n or n.endswith(t.name) for t in ctx.tasks))
    composed = sum(t.numel() * t.element_size() for s in ctx.statistics.values()
                   for t in (s.labels, s.counts, s.means, s.scatter))
    return on_disk / len(ctx.tasks), adapters + composed


def measure(shape: str, reps: int, tasks=(5, 20, 50), device: str = "cpu", only: tuple = BENCHED) -> list[Row]:
    rows = []
    for num_tasks in tasks:
        fns, contexts = {}, {}
        for method in only:
            model, inputs, ctx = contexts[method] = context(method, shape, num_tasks, device)

            def predict(ctx=ctx, inputs=inputs):  # as ContinualClassifier.predictions runs a batch
                ctx.outputs, ctx.batch_key = OutputCache(), "predict"
                with torch.inference_mode(), ctx.prefix.batch():
                    ctx.method.predict_batch(ctx, inputs)

            fns[method] = predict
            if "plain" not in fns:
                def plain(model=model, inputs=inputs):
                    with torch.inference_mode(), model.disable_adapter():
                        model(**inputs)

                fns["plain"] = plain
        t = alternate(fns, reps)
        for method in only:
            model, _, ctx = contexts[method]
            with tempfile.TemporaryDirectory() as folder:
                per_task, loaded = saved_sizes(model, ctx, folder)
            setting = setting_of(method)[1]
            rescored = setting.cil_rule in ("combined", "product")  # top-k candidates, each an adapter pass
            goal = ("reported" if not setting.first_session_adaptation else
                    "<= 3.3x" if rescored else "<= 2.2x")  # product: k = 3 candidates re-scored
            rows.append(Row(f"predict, {method} ({setting.label}), {num_tasks} tasks, vs one plain forward",
                            t.ratio(method, "plain"), goal, describe(shape),
                            f"{t[method]:.3f} s per batch; plain {t['plain']:.3f} s; saved run {per_task / 1e6:.2f} MB "
                            f"per task (adapter + statistics); adapters and composed statistics in memory "
                            f"{loaded / 1e6:.1f} MB"))
    return rows


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=BENCHED, default=list(BENCHED), help="these rows only")
    parser.add_argument("--tasks", nargs="+", type=int, default=[5, 10, 25, 50], help="numbers of tasks")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape, tasks = ("tiny-bert", (5,)) if args.tiny else ("minilm-l6", tuple(args.tasks))
    rows = measure(shape, args.reps, tasks, device, tuple(args.only))
    only = "" if args.only == list(BENCHED) else " --only " + " ".join(args.only)
    if not args.tiny and args.tasks != [5, 10, 25, 50]:
        only += " --tasks " + " ".join(map(str, args.tasks))
    lines = [f"Machine: {machine()}. Command: `python bench/predict_cost.py" + (" --tiny" if args.tiny else "")
             + f" --reps {args.reps}{only}`; median of per-round ratios.", "",
             "| row | measured | goal | met | shapes | detail |", "|---|---|---|---|---|---|"]
    lines += [r.markdown() for r in rows]
    out = "\n".join(lines)
    print(out)
    return out


if __name__ == "__main__":
    main()
