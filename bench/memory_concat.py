"""Memory tokens: T independently trained tasks in ONE forward vs T separate forwards (Sandler et al. 2022, Sec. 2.2).

Same process, same batch, alternating repetitions, medians. Prints a Markdown table of ratios:
- ``concat(T) / one task``: cost of running T tasks together, relative to running one task (goal: T=10 <= 1.2x);
- ``T separate / concat(T)``: what concatenation saves against running each task's forward.

    python bench/memory_concat.py                 # ViT-S/14 shapes at 224 px (hidden 384, 12 layers, 257 tokens)
    python bench/memory_concat.py --tiny --reps 3 # smoke run on tiny shapes (CI)
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import torch
from peft import get_peft_model

import peft_memory  # noqa: F401
from peft_memory import MemoryTokenConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import alternate, machine  # noqa: E402
from models import SHAPES, describe, make  # noqa: E402


def build(shape: str, tasks: int, tokens: int, device: str = "cpu"):
    """``(model, inputs)``: shape ``shape`` of :mod:`models` with ``tasks`` memory adapters ``task_0..``."""
    base, inputs = make(shape, device=device)
    model = get_peft_model(base, MemoryTokenConfig(num_memory_tokens=tokens, num_labels=10), "task_0")
    for t in range(1, tasks):
        model.add_adapter(f"task_{t}", MemoryTokenConfig(num_memory_tokens=tokens, num_labels=10))
    return model.eval(), inputs


def measure(shape: str = "vit-s14", reps: int = 5, batch: int | None = None, tokens: int = 5, tasks=(1, 2, 5, 10),
            device: str = "cpu") -> dict[tuple[str, int], float]:
    """Median seconds of ``("concat", T)`` (T tasks in one forward) and ``("separate", T)`` (T forwards); ``batch``
    keeps the first ``batch`` samples of the shape's batch."""
    tasks = sorted(set(tasks) | {1})  # one task is the reference
    model, inputs = build(shape, max(tasks), tokens, device)
    inputs = {k: v[:batch] for k, v in inputs.items()} if batch else inputs
    tuner = model.base_model

    def concat(t):
        with torch.inference_mode(), tuner.concatenated([f"task_{i}" for i in range(t)]):
            model(**inputs)

    def separate(t):
        with torch.inference_mode():
            for i in range(t):
                tuner.set_adapter(f"task_{i}")
                model(**inputs)

    fns = {}
    for t in tasks:
        fns[("concat", t)] = functools.partial(concat, t)
        fns[("separate", t)] = functools.partial(separate, t)
    return alternate(fns, reps=reps)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke run)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per measurement (median; at least 5)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=5, help="memory tokens per layer per task")
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 5, 10])
    args = parser.parse_args(argv)
    shape = "tiny-vit" if args.tiny else "vit-s14"
    med = measure(shape, args.reps, args.batch, args.tokens, args.tasks)
    one = med[("concat", 1)]
    print(f"# Memory tokens: T tasks in one forward ({describe(shape).replace(f'batch {SHAPES[shape][2]}', f'batch {args.batch}')}"
          f", {args.tokens} memory tokens per layer per task; {machine()}; median of {args.reps})\n")
    print("| T | one forward (ms) | concat(T) / one task | T separate / concat(T) |")
    print("|---|---|---|---|")
    for t in sorted({t for _, t in med}):
        print(f"| {t} | {1000 * med[('concat', t)]:.1f} | {med[('concat', t)] / one:.3f}x | "
              f"{med[('separate', t)] / med[('concat', t)]:.2f}x |")


if __name__ == "__main__":
    main()
