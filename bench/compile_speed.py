"""torch.compile against eager for every method's inference forward (one task adapter active), written to
bench/COMPILE.md.

    python bench/compile_speed.py                                  # vit-s14 and minilm-l6 shapes, inductor
    python bench/compile_speed.py --tiny --reps 1 --backend aot_eager --output /tmp/COMPILE.md   # smoke run (CI)

Each row: compiled forward seconds / eager forward seconds, same model and inputs, alternating repetitions after
one warm-up call (which compiles). The compiled forward has no graph break (tests/test_compile.py).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from peft import get_peft_model

from peft_memory import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Row, alternate, results_markdown  # noqa: E402
from models import describe, make  # noqa: E402

CONFIGS = {
    "SoftMask": lambda: SoftMaskConfig(num_labels=10, init_weights=False),
    "DualPrompt": lambda: DualPromptConfig(num_labels=10),
    "memory tokens": lambda: MemoryTokenConfig(num_labels=10),
}


def measure(shape: str, backend: str, reps: int) -> list[Row]:
    rows = []
    for method, config in CONFIGS.items():
        base, inputs = make(shape)
        model = get_peft_model(base, config()).eval()
        torch._dynamo.reset()
        compiled = torch.compile(model, backend=backend)

        def eager(m=model, x=inputs):
            with torch.no_grad():
                return m(**x).logits

        def fast(m=compiled, x=inputs):
            with torch.no_grad():
                return m(**x).logits

        times = alternate({"compiled": fast, "eager": eager}, reps=reps)
        rows.append(Row(f"{method} forward, torch.compile ({backend}) vs eager", times.ratio("compiled", "eager"),
                        "reported", describe(shape), "one adapter active; inference, no_grad"))
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke run)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "COMPILE.md"))
    args = parser.parse_args(argv)
    shapes = ["tiny-vit", "tiny-bert"] if args.tiny else ["vit-s14", "minilm-l6"]
    rows = [row for shape in shapes for row in measure(shape, args.backend, args.reps)]
    command = "python bench/compile_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = results_markdown(rows, command.strip(), args.reps)
    with open(args.output, "w") as f:
        f.write(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
