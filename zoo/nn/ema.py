"""Exponential moving average of a module's weights, used for sampling and evaluation."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = d * shadow + (1 - d) * param`` for every float parameter, with
    ``d = min(decay, (1 + n) / (10 + n))`` after n updates, so short runs are not dominated
    by the initial weights. Buffers (e.g. BatchNorm statistics) are copied, not averaged.
    ``swapped()`` puts the averaged weights into the live module for the duration of a block.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.module = module
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self._float_keys = [k for k, v in self.shadow.items() if v.is_floating_point()]
        self._params = dict(module.named_parameters())
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        live = self.module.state_dict()
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        keys = [k for k in self._float_keys if k in self._params]
        if keys:
            torch._foreach_lerp_([self.shadow[k] for k in keys], [live[k] for k in keys], 1 - decay)
        for k, v in live.items():
            if k not in self._params:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)

    @contextmanager
    def swapped(self):
        """Temporarily load the averaged weights into the module."""
        backup = copy.deepcopy(self.module.state_dict())
        self.module.load_state_dict(self.shadow)
        try:
            yield self.module
        finally:
            self.module.load_state_dict(backup)
