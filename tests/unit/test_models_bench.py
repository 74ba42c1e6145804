"""Smoke test of training/bench_models.py on a tiny input (the real run is documented in docs/models.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_models", ROOT / "training" / "bench_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zoo_table_and_memory_on_a_tiny_input():
    bench = _bench()
    table = bench.zoo_table(["temporal", "stran"], (1, 1, 8, 16, 32, 32), runs=1, warmup=0, memory=True)
    lines = table.splitlines()
    assert lines[0].startswith("| network | parameters | GFLOP / study")
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert set(rows) == {"temporal", "stran"}
    assert "n/a" not in rows["stran"]  # memory was measured
    cells = [c.strip() for c in rows["stran"].split("|")[1:-1]]
    assert float(cells[2]) > 0  # GFLOP counted


def test_peak_tensor_memory_sees_allocations():
    bench = _bench()
    mib = bench.peak_tensor_memory(lambda: torch.empty(4 * 2**20, dtype=torch.uint8).fill_(1))
    assert 3.9 < mib < 4.5
