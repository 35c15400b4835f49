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
