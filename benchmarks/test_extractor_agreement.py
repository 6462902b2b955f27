"""benchmarks/extractor_agreement.py's rank correlations and table, on made-up scores."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import extractor_agreement as agreement  # noqa: E402


def scores(b_values):
    a_values = [1.0, 2.0, 3.0, 4.0]
    return {f"m{i}": {"a": {"fid": (x, (x - 0.1, x + 0.1)), "kid": (x / 10, (None, None))},
                      "/x/ssl.pt": {"fid": (y, (y - 0.1, y + 0.1)), "kid": (y / 10, (None, None))}}
            for i, (x, y) in enumerate(zip(a_values, b_values, strict=True))}


def test_same_order_is_one_and_reversed_is_minus_one():
    same = agreement.correlations(scores([10.0, 20.0, 30.0, 40.0]), ["a", "/x/ssl.pt"])
    assert same["fid"][0] == pytest.approx(1.0) and same["kid"][2] == pytest.approx(1.0)
    rev = agreement.correlations(scores([4.0, 3.0, 2.0, 1.0]), ["a", "/x/ssl.pt"])
    assert rev["fid"][0] == pytest.approx(-1.0)


def test_the_table_names_extractor_files_by_their_stem():
    s = scores([10.0, 30.0, 20.0, 40.0])
    text = agreement.markdown(s, ["a", "/x/ssl.pt"], agreement.correlations(s, ["a", "/x/ssl.pt"]),
                              "mnist", 1000)
    assert text.startswith("# Extractor agreement on mnist: a vs ssl")
    assert "| m0 | 1 [0.9, 1.1] | 10 [9.9, 10.1] | 0.1 | 1 |" in text
    assert "| FID | 0.800 (" in text
