"""Issue #15's check on a published model: `qengine search --target-sqnr 30` on MediaPipe's iris
landmark model writes a file TFLite runs, at most 0.8x the published file's size, that reaches
the target within 3 dB on held-out photos (SQNR measured in TFLite against the published float
file in TFLite). The inputs and the measurement are benchmarks/search_published.py's."""

from __future__ import annotations

import sys
from pathlib import Path

import published_models
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import search_published

pytestmark = [pytest.mark.tf, pytest.mark.slow]


def test_search_on_published_iris_landmark_meets_size_and_held_out_sqnr():
    try:
        paths = published_models.fetch()
    except published_models.FetchError as e:
        pytest.skip(str(e))
    row = search_published.run_one("iris_landmark", paths["iris_landmark"], 30.0)
    assert row["bytes"] is not None, row["search_says"]
    assert row["ratio"] <= 0.8
    assert row["held_out_sqnr_db"] >= 30 - 3
