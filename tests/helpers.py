"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import torch

#: float32 results stored on one machine and recomputed on another differ by rounding: a
#: different summation order or vector width moves a reduction over D terms by a few units
#: in the last place. 64 ulps (relative 7.6e-6) covers that and nothing a bug would change.
FLOAT32_RTOL = 64 * 1.1920929e-07


def assert_float32_close(actual, expected) -> None:
    """``actual`` equals a float32 result stored on another machine, up to rounding."""
    torch.testing.assert_close(actual, expected, rtol=FLOAT32_RTOL, atol=0.0)
