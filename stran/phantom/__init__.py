"""Synthetic SAX bSSFP cine phantom cohort: the project's only data (tests, demo, training).

Public API::

    cfg = sample_config(seed, scenario=None, profile=None)  # PhantomConfig
    study = generate_study(cfg)                              # PhantomStudy(.cine, .truth, .config)
    study.truth.scar_label()                                 # the .scar.json label
    generate_cohort(out_dir, n, seed)                        # files + manifest

See docs/phantom.md for the model, the scenarios and the parameter ranges.
"""

from stran.phantom.anatomy import SEGMENT_NAMES, TERRITORIES
from stran.phantom.config import (
    GENERATOR_VERSION,
    AcquisitionConfig,
    AnatomyConfig,
    MotionConfig,
    PhantomConfig,
    sample_config,
)
from stran.phantom.generator import PhantomStudy, generate_study, patient_id_for
from stran.phantom.scenarios import (
    SCAR_SCENARIOS,
    SCENARIO_NAMES,
    SCENARIOS,
    FatFocus,
    PathologyConfig,
    ScarBand,
    ScenarioParams,
)
from stran.phantom.signal import PROFILE_NAMES, PROFILES, ScannerProfile
from stran.phantom.truth import MASK_LABELS, GroundTruth, load_masks


def generate_cohort(*args, **kwargs):  # noqa: D103 - thin lazy wrapper, documented in stran.phantom.cohort
    from stran.phantom.cohort import generate_cohort as _generate_cohort

    return _generate_cohort(*args, **kwargs)


__all__ = [
    "AcquisitionConfig",
    "AnatomyConfig",
    "FatFocus",
    "GENERATOR_VERSION",
    "GroundTruth",
    "MASK_LABELS",
    "MotionConfig",
    "PROFILES",
    "PROFILE_NAMES",
    "PathologyConfig",
    "PhantomConfig",
    "PhantomStudy",
    "SCAR_SCENARIOS",
    "SCENARIOS",
    "SCENARIO_NAMES",
    "SEGMENT_NAMES",
    "ScannerProfile",
    "ScarBand",
    "ScenarioParams",
    "TERRITORIES",
    "generate_cohort",
    "generate_study",
    "load_masks",
    "patient_id_for",
    "sample_config",
]
