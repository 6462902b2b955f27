"""How straight a flow's paths are (Liu et al. 2023, "Flow Straight and Fast", section 2.2):

    S = E_z integral_0^1 || (z - x_0) - v(x_t, t) ||^2 dt,

along the path the model's own ODE takes from x_1 = z ~ N(0, I) to x_0 (zoo's convention:
t = 1 is noise, dx/dt = v, so z - x_0 is the velocity of the straight line through both
ends). S = 0 exactly when every path is a straight line run at constant speed, where one
Euler step is exact; the larger S, the more steps a sampler needs.

The path is Euler's at ``steps`` equal steps t_k = 1 - k / S (the integral by the same rule:
the mean over the steps), so S is that of the discretised path; on it z - x_0 is the mean
of the velocities, and S the mean squared deviation of each velocity from it. The squared
norm is divided by the dimension D (a mean over the pixels), so models of different image
sizes compare.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: Euler steps of the path, by default
STEPS = 32


def euler_straightness(velocity: Callable, z: Tensor, steps: int = STEPS) -> Tensor:
    """S per row of ``z`` (float64 [n]) along the Euler path of ``velocity(x, t)`` (t a float
    in (0, 1]) from x_1 = z over ``steps`` equal steps."""
    x, vs = z, []
    for k in range(steps):
        v = velocity(x, 1 - k / steps).double()
        vs.append(v)
        x = x - v.to(x.dtype) / steps
    v = torch.stack(vs)  # [steps, n, ...]
    line = (z.double() - x.double()).unsqueeze(0)  # the straight line's velocity z - x_0
    return (line - v).square().flatten(2).mean(2).mean(0)
