"""Shared benchmark plumbing: alternating repetitions with medians, the machine's description, RESULTS.md rows."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


class Timings(dict):
    """Median seconds per function (the dict), with every round's times kept in ``rounds`` for paired ratios."""

    def __init__(self, rounds: dict[str, list[float]]) -> None:
        super().__init__({k: statistics.median(v) for k, v in rounds.items()})
        self.rounds = rounds

    def ratio(self, num: str, den: str) -> float:
        """Median over rounds of ``num / den`` measured in the same round: slow drifts of the machine cancel."""
        return statistics.median(a / b for a, b in zip(self.rounds[num], self.rounds[den]))


def alternate(fns: dict[str, Callable[[], object]], reps: int = 5, warmup: int = 1) -> Timings:
    """Seconds of each function over ``reps`` rounds. Every round runs the functions in order and then in reverse
    order (A B B A) and keeps the mean of the two runs, so drifts of the machine (other processes, thermal, caches)
    and the position in the round hit all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    rounds: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns.items())
    for _ in range(reps):
        spent = dict.fromkeys(fns, 0.0)
        for key, fn in order + order[::-1]:
            start = time.perf_counter()
            fn()
            spent[key] += time.perf_counter() - start
        for key, value in spent.items():
            rounds[key].append(value / 2)
    return Timings(rounds)


def machine() -> str:
    """CPU model, cores and threads, torch version, and the GPU if one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}{gpu}"


@dataclass
class Row:
    """One line of RESULTS.md. ``value`` is a ratio (``unit="x"``) or a reported quantity."""

    name: str
    value: float
    goal: str  # e.g. "<= 1.03x", ">= 0.95x" or "reported"
    shapes: str
    detail: str = ""
    unit: str = "x"

    @property
    def met(self) -> str:
        if self.goal.startswith("<="):
            return "yes" if self.value <= float(self.goal[2:].strip(" x")) else "**no**"
        if self.goal.startswith(">="):
            return "yes" if self.value >= float(self.goal[2:].strip(" x")) else "**no**"
        return "-"

    def markdown(self) -> str:
        value = f"{self.value:.3f}{self.unit}" if self.unit == "x" else f"{self.value:,.2f} {self.unit}"
        return f"| {self.name} | {value} | {self.goal} | {self.met} | {self.shapes} | {self.detail} |"


def results_markdown(rows: list[Row], command: str, reps: int, reasons: dict[str, str] | None = None) -> str:
    """RESULTS.md: the table, then every goal missed in this run with its written reason (``reasons``, keyed by row
    name; profiles in NOTES.md)."""
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` on: {machine()}. Each ratio is measured in one process: every round runs the "
        "measured functions in order and in reverse order (A-B-B-A), and a ratio is the median over the rounds of "
        f"the ratio within a round; {reps} rounds (3x as many for the inference rows). Benchmarks are not tests: CI "
        "runs them only on tiny shapes (`tests/test_bench_smoke.py`). Profiles and analysis: [NOTES.md](NOTES.md).",
        "",
        "| row | measured | goal | met | shapes | detail |",
        "|---|---|---|---|---|---|",
        *(row.markdown() for row in rows),
        "",
    ]
    missed = [row for row in rows if row.met == "**no**"]
    if missed:
        lines += ["## Goals missed in this run", ""]
        for row in missed:
            reason = (reasons or {}).get(row.name, "no written reason yet; profile it (NOTES.md).")
            lines.append(f"- **{row.name}** ({row.shapes}): {row.value:.3f}x. {reason}")
        lines.append("")
    return "\n".join(lines)
