"""The .scar.json label contract: one validator for training, the CLI and the server."""

from __future__ import annotations

import json

import pytest

from stran.engine.labels import LabelError, read_label_csv, read_label_file, validate_label


def test_a_full_label():
    label = validate_label({"study_label": 1, "slice_labels": [0, 1, None], "source": "LGE", "reviewer": "AB", "comment": "x"},
                           n_slices=3)
    assert label.slice_labels == (0, 1, None) and label.to_json()["slice_labels"] == [0, 1, None]


def test_study_label_only():
    assert validate_label({"study_label": 0}).slice_labels == ()


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        ([], "JSON object"),
        ({}, "study_label"),
        ({"study_label": True}, "0 or 1"),
        ({"study_label": 1, "slice_labels": "1,0"}, "list"),
        ({"study_label": 1, "slice_labels": [1, 3]}, "slice_labels"),
        ({"study_label": 0, "slice_labels": [0, 1]}, "correct one of them"),
        ({"study_label": 1, "source": "CT"}, "source"),
        ({"study_label": 1, "reviewer": 5}, "reviewer"),
    ],
)
def test_bad_labels_say_what_is_wrong(obj, words):
    with pytest.raises(LabelError, match=words):
        validate_label(obj)


def test_slice_count_must_match_the_study():
    with pytest.raises(LabelError, match="has 2 entries but the study has 3 slices"):
        validate_label({"study_label": 1, "slice_labels": [1, 0]}, n_slices=3)


def test_files_and_csv_name_the_source(tmp_path):
    bad = tmp_path / "x.scar.json"
    bad.write_text("{oops")
    with pytest.raises(LabelError, match="x.scar.json"):
        read_label_file(bad)
    good = tmp_path / "y.scar.json"
    good.write_text(json.dumps({"study_label": 1}))
    assert read_label_file(good).study_label == 1
    table = tmp_path / "labels.csv"
    table.write_text("id,study_label,slice_labels\na,1,0;1;\nb,0,\n")
    labels = read_label_csv(table)
    assert labels["a"].slice_labels == (0, 1, None) and labels["b"].study_label == 0
    table.write_text("id,study_label\na,7\n")
    with pytest.raises(LabelError, match="line 2"):
        read_label_csv(table)
