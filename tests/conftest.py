"""Shared pytest fixtures.

``make_study(...)`` builds a small synthetic ``CineStudy`` (a beating ring:
bright blood pool in a darker myocardial ring whose radius follows the
cardiac cycle and tapers from slice 0 to the last slice), with realistic
oblique short-axis geometry, per-slice RR, UIDs and integer-valued pixels.
Defaults: 4 slices x 6 phases x 32 rows x 40 columns; every keyword of
``stran.io.synthetic.make_cine_study`` can be overridden, e.g.
``make_study(n_slices=3, n_phases=25, rr_jitter=0.05, reverse_normal=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from stran.io.study import CineStudy


@pytest.fixture
def make_study() -> Callable[..., CineStudy]:
    from stran.io.synthetic import make_cine_study

    def build(*args: Any, **kwargs: Any) -> CineStudy:
        return make_cine_study(*args, **kwargs)

    return build


# A real PACS (Orthanc) for any test: `orthanc`, `pacs`, `orthanc_auth` (tests/pacs_fixture.py).
pytest_plugins = ["pacs_fixture"]
