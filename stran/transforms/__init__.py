"""Preprocessing shared by training, inference, the CLI and the app (one chain), and its inverse."""

from stran.transforms.inverse import attention_to_study, slice_scores_to_study
from stran.transforms.localize import HeartLocation, localize_heart
from stran.transforms.preprocess import PrepInfo, PreprocessConfig, build_preprocessing, preprocess_study

__all__ = [
    "HeartLocation",
    "PrepInfo",
    "PreprocessConfig",
    "attention_to_study",
    "build_preprocessing",
    "localize_heart",
    "preprocess_study",
    "slice_scores_to_study",
]
