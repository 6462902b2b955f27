"""How straight a flow model's paths are: Liu et al.'s straightness of its ODE
(``zoo.models.flow.straightness``), what ``zoo eval`` adds for a model that has one
(``flow-matching``, ``rectified-flow``, ``latent-flow-matching`` in its latents).

>>> from zoo.metrics import straightness
>>> straightness.evaluate(model, n=1000, seed=0)
{"straightness": 0.0123, "straightness_stderr": 0.0004, "straightness_n": 1000,
 "straightness_steps": 32}

The figure is a mean over ``n`` paths with its standard error; 0 is a straight flow (one
Euler step exact).
"""

from __future__ import annotations

import torch

from ..core import GenerativeModel
from ..models.flow.straightness import STEPS

#: the keys ``evaluate`` returns
KEYS = ("straightness", "straightness_stderr", "straightness_n", "straightness_steps")
#: paths ``zoo eval`` measures at most (each costs ``steps`` network calls: 250 paths take
#: about 15 s of a 0.3M-parameter U-Net on a CPU; standard error ~1% of the figure)
MAX_N = 250


def measures(model) -> bool:
    """Whether ``model`` has a straightness (a flow)."""
    return callable(getattr(model, "straightness", None))


def evaluate(model: GenerativeModel, n: int = MAX_N, seed: int = 0,
             steps: int = STEPS) -> dict:
    """The model's straightness over ``n`` paths from noise drawn with ``seed``, along
    ``steps`` Euler steps."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    value, stderr = model.straightness(n, steps=steps, generator=gen)
    return {"straightness": value, "straightness_stderr": stderr, "straightness_n": n,
            "straightness_steps": steps}


def format_straightness(result: dict) -> str:
    """The straightness of a result, as a line under ``format_result``'s table."""
    if result.get("straightness") is None:
        return ""
    return (f"straightness {result['straightness']:.4g} ± {result['straightness_stderr']:.2g} "
            f"(mean over {result['straightness_n']} paths of ||(z - x_0) - v(x_t, t)||^2 per "
            f"dimension along {result['straightness_steps']} Euler steps; 0: straight)")
