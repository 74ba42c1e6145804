"""``stran_paper_layout`` and ``stran`` (as shipped) give today's outputs on fixed weights and a fixed input:
tests/data/models_reference.npz, written by training/make_models_reference.py before the speed work of issue 14, so
that any faster path must compute the same numbers (atol 1e-5)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_models_give_todays_outputs() -> None:
    sys.path.insert(0, str(REPO / "training"))
    from make_models_reference import REFERENCE, compare, load_reference, outputs

    assert REFERENCE.exists(), "no reference: run training/make_models_reference.py with today's models first"
    problems = compare(outputs(), load_reference())
    assert not problems, "outputs differ from tests/data/models_reference.npz:\n" + "\n".join(problems)
