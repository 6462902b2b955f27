"""What the Trainer attaches to a model for a run: DDP wrappers, per-batch noise, the shard.

``TrainingRuntime`` is a mixin of ``GenerativeModel`` (``zoo.core``): the interface lives
there, the training runtime here, which alone imports ``zoo.distributed`` (for the
collective NaN check); neither imports ``core`` back. A family calls ``wrapped(name)``
for the modules that compute its losses, ``batch_randn``/``batch_rand``/``batch_randint``
for per-batch noise, and (through ``GenerativeModel.optimize``) ``check_finite``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .distributed import all_finite
from .errors import TrainingDiverged


class TrainingRuntime:
    """The training-runtime part of a GenerativeModel (a mixin: no ``__init__``; the model's
    ``__init__`` calls ``attach_training()`` to start detached). Expects the host to have
    ``device`` and ``name``.

    Set by the Trainer (``attach_training``): DistributedDataParallel wrappers of
    ``ddp_modules()``, the generator of per-batch noise and this process's shard of the
    global batch. Plain attributes, not submodules: state_dict never sees them.
    """

    _ddp: dict[str, nn.Module]
    _noise_generator: torch.Generator | None
    _shard: tuple[int, int]

    # -- distributed training --------------------------------------------------------------
    def ddp_modules(self) -> dict[str, nn.Module]:
        """The modules whose ``forward`` ``train_step`` calls to compute its losses, by name.

        Under DDP the Trainer wraps each in ``DistributedDataParallel`` (a GAN: generator and
        discriminator separately) and ``train_step`` calls them through ``wrapped(name)``,
        so their gradients are averaged over ranks in ``backward``. Together they must hold
        every parameter an optimizer updates. Default: the whole model, whose ``forward``
        then computes what the losses need.
        """
        return {"model": self}

    def wrapped(self, name: str) -> nn.Module:
        """``ddp_modules()[name]``, through its DDP wrapper while the Trainer runs DDP."""
        ddp = self._ddp.get(name)
        return ddp if ddp is not None else self.ddp_modules()[name]

    def attach_training(
        self,
        wrappers: dict[str, nn.Module] | None = None,
        noise_generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        """Set (or, called bare, clear) what the Trainer gives ``train_step``: the DDP
        wrappers of ``ddp_modules()``, the noise generator and the shard (rank, world)."""
        object.__setattr__(self, "_ddp", dict(wrappers or {}))
        self._noise_generator = noise_generator
        self._shard = (int(shard[0]), int(shard[1]))

    def _batch_draw(self, draw, shape, **kwargs) -> Tensor:
        rank, world = self._shard
        gen = self._noise_generator
        gdev = gen.device if gen is not None else self.device
        full = draw((shape[0] * world, *shape[1:]), generator=gen, device=gdev, **kwargs)
        return (full[rank::world] if world > 1 else full).to(self.device)

    def batch_randn(self, *shape: int) -> Tensor:
        """Standard normal noise for this process's shard of a batch (``shape[0]`` rows).

        Drawn for the whole global batch (``world`` times the rows) from the training noise
        generator and sliced like the data (rows rank, rank + world, ...), so each rank
        gets different noise and N ranks together draw exactly what one process would."""
        return self._batch_draw(torch.randn, shape)

    def batch_rand(self, *shape: int) -> Tensor:
        """Uniform [0, 1) noise for this shard of a batch (see ``batch_randn``)."""
        return self._batch_draw(torch.rand, shape)

    def batch_randint(self, high: int, *shape: int) -> Tensor:
        """Integers in [0, high) for this shard of a batch (see ``batch_randn``)."""
        return self._batch_draw(lambda size, **kw: torch.randint(0, high, size, **kw), shape)

    def check_finite(self, loss: Tensor) -> None:
        """Raise TrainingDiverged when ``loss`` is NaN or infinite.

        Under DDP the check is collective: when the loss of any rank is not finite, every
        rank raises (so none is left waiting for the others' gradients in ``backward``)."""
        if self._shard[1] > 1:
            if not all_finite(loss):
                raise TrainingDiverged(f"{self.name}: loss became {loss.item()} "
                                       f"(on this rank; non-finite on at least one rank)")
        elif not math.isfinite(value := loss.item()):  # one op: isfinite() would be five
            raise TrainingDiverged(f"{self.name}: loss became {value}")


__all__ = ["TrainingRuntime"]
