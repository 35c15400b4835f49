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
from transformers import ViTConfig, ViTModel

import peft_memory  # noqa: F401
from peft_memory import MemoryTokenConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import alternate, machine  # noqa: E402


def build(tiny: bool, tasks: int, tokens: int, attn: str):
    if tiny:
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, attn_implementation=attn)
    else:  # ViT-S/14 (DINOv2-small layout) at 224 px: 16 x 16 patches + CLS = 257 tokens
        config = ViTConfig(image_size=224, patch_size=14, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                           intermediate_size=1536, attn_implementation=attn)
    torch.manual_seed(0)
    model = get_peft_model(ViTModel(config), MemoryTokenConfig(num_memory_tokens=tokens, num_labels=10), "task_0")
    for t in range(1, tasks):
        model.add_adapter(f"task_{t}", MemoryTokenConfig(num_memory_tokens=tokens, num_labels=10))
    return model.eval(), config


def measure(tiny: bool = False, reps: int = 5, batch: int = 4, tokens: int = 5, tasks=(1, 2, 5, 10),
            attn: str = "sdpa") -> dict[tuple[str, int], float]:
    """Median seconds of ``("concat", T)`` (T tasks in one forward) and ``("separate", T)`` (T forwards)."""
    tasks = sorted(set(tasks) | {1})  # one task is the reference
    model, config = build(tiny, max(tasks), tokens, attn)
    tuner = model.base_model
    pixels = torch.randn(batch, 3, config.image_size, config.image_size)

    def concat(t):
        with torch.inference_mode(), tuner.concatenated([f"task_{i}" for i in range(t)]):
            model(pixel_values=pixels)

    def separate(t):
        with torch.inference_mode():
            for i in range(t):
                tuner.set_adapter(f"task_{i}")
                model(pixel_values=pixels)

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
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    args = parser.parse_args(argv)
    med = measure(args.tiny, args.reps, args.batch, args.tokens, args.tasks, args.attn)
    one = med[("concat", 1)]
    shape = "tiny ViT" if args.tiny else "ViT-S/14 224px (hidden 384, 12 layers, 6 heads, 257 tokens)"
    print(f"# Memory tokens: T tasks in one forward ({shape}, batch {args.batch}, {args.tokens} memory tokens per "
          f"layer per task, {args.attn}; {machine()}; median of {args.reps})\n")
    print("| T | one forward (ms) | concat(T) / one task | T separate / concat(T) |")
    print("|---|---|---|---|")
    for t in sorted({t for _, t in med}):
        print(f"| {t} | {1000 * med[('concat', t)]:.1f} | {med[('concat', t)] / one:.3f}x | "
              f"{med[('separate', t)] / med[('concat', t)]:.2f}x |")


if __name__ == "__main__":
    main()
