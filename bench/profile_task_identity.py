"""Where per-sample Gradient-ID's time goes, against a plain forward (issue 6: Gradient-ID vs Prompt-ID row).

    python bench/profile_task_identity.py [--shape minilm-l6] [--reps 5]

Prints each piece as a multiple of one routed forward of the same batch: the frozen query pass of Prompt-ID, the
superposed forward of Gradient-ID (T masked matmuls per masked layer), and Gradient-ID (forward + backward to the
alphas) for DualPrompt-Soft-TF adapters (prompts at layers 0-4 are superposed too, so the backward reaches layer 0)
and for mask-only adapters (the backward stops at the first masked layer).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from peft import get_peft_model

import peft_memory  # noqa: F401
from peft_memory import SoftMaskConfig, gradient_id

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import alternate, machine  # noqa: E402
from models import describe, make  # noqa: E402

NAMES = [f"task_{i}" for i in range(5)]


def build(shape, **kwargs):
    base, inputs = make(shape)
    model = get_peft_model(base, SoftMaskConfig(num_labels=10, **kwargs), NAMES[0])
    for name in NAMES[1:]:
        model.add_adapter(name, SoftMaskConfig(num_labels=10, **kwargs))
    return model.eval(), inputs


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="minilm-l6")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    prompted, inputs = build(args.shape, use_prompts=True)
    masks_only, _ = build(args.shape)
    tuner, batch = prompted.base_model, next(iter(inputs.values())).shape[0]

    def forward():
        with torch.no_grad():
            prompted(**inputs, adapter_names=[NAMES[0]] * batch)

    def query():
        with torch.no_grad():
            tuner.frozen_features(prompted, inputs)

    def superposed():
        with torch.no_grad(), tuner.superposition(NAMES, torch.full((batch, len(NAMES)), 1 / len(NAMES))):
            prompted(**inputs)

    t = alternate({"routed forward": forward, "Prompt-ID query pass": query,
                   "superposed forward (masks + prompts)": superposed,
                   "Gradient-ID, masks + prompts": lambda: gradient_id(prompted, inputs, NAMES),
                   "Gradient-ID, masks only": lambda: gradient_id(masks_only, inputs, NAMES)}, args.reps)
    print(f"# Gradient-ID cost breakdown ({describe(args.shape)}, {len(NAMES)} tasks; {machine()}; "
          f"median of {args.reps})\n")
    print("| piece | ms | x routed forward |")
    print("|---|---|---|")
    for key, value in t.items():
        print(f"| {key} | {1000 * value:.0f} | {value / t['routed forward']:.2f}x |")
    return t


if __name__ == "__main__":
    main()
