"""zoo.choose.scores: figures with replicates over common random numbers."""

import numpy as np
import torch

from zoo.choose import scores


def test_score_replicates_share_resamples_across_candidates():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g, dtype=torch.float64)
    a = torch.randn(300, 8, generator=g, dtype=torch.float64) + 0.3
    b = a + 0.05  # b is a shifted a: with shared resamples its replicates track a's
    sa, sb = scores.score(a, real, draws=50), scores.score(b, real, draws=50)
    da, db = np.array(sa["kid"].draws), np.array(sb["kid"].draws)
    assert len(da) == 50 and sa["kid"].value < sb["kid"].value
    assert np.corrcoef(da, db)[0, 1] > 0.95  # paired: the same samples in each replicate
    lo, hi = sa["fid"].interval()
    assert lo <= sa["fid"].value <= hi


def test_seed_wins():
    assert scores.seed_wins({"a": [1, 5, 1], "b": [2, 2, 2]}) == {"a": 2, "b": 1}
