"""Drawing ``n`` samples of a model in seeded slices, the same with any number of processes.

The samples are cut into slices of ``batch_size``; slice i is drawn with its own generator
seeded with ``mix_seed(seed, i)``, so it is the same images whichever process draws it.
Under a process group (torchrun) rank r draws slices r, r + N, ... The metrics
(``zoo.metrics.evaluate``), the Trainer's streaming evaluation and the harness all sample
through here; ``zoo.metrics`` re-exports both functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import distributed as zdist
from .core import GenerativeModel, eval_mode
from .errors import ConfigError, MetricsError


def sample_slices(
    model: GenerativeModel, n: int, batch_size: int = 500, seed: int = 0,
    generator: torch.Generator | None = None, progress: bool = False, **sampler_options,
):
    """Yield ``(i, images)`` for this rank's slices of ``n`` samples: slice i holds samples
    ``i * batch_size`` onwards (at most ``batch_size``) drawn with a generator seeded with
    ``mix_seed(base, i)``, where base is ``seed`` or, when ``generator`` is given, one
    number drawn from it. Rank r of N takes slices r, r + N, ...; one process takes all.
    Slice i is the same images whichever process draws it."""
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    base = int(seed)
    if generator is not None:
        base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    slices = zdist.my_share(-(-n // batch_size))
    from tqdm.auto import tqdm

    mine = sum(min(batch_size, n - i * batch_size) for i in slices)
    with eval_mode(model), torch.no_grad(), tqdm(
            total=mine, unit="img", desc=f"sample {model.name}",
            disable=not progress or not zdist.is_main()) as bar:
        for i in slices:
            b = min(batch_size, n - i * batch_size)
            gen = torch.Generator(device=model.device).manual_seed(zdist.mix_seed(base, i))
            x = model.sample(b, generator=gen, **sampler_options)
            if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.shape[0] != b:
                raise MetricsError(f"{model.name}.sample({b}) returned "
                                   f"{getattr(x, 'dtype', type(x))} {tuple(x.shape)}")
            bar.update(b)
            yield i, x


def draw_samples(
    model: GenerativeModel, n: int, batch_size: int = 500, seed: int = 0,
    progress: bool = False, generator: torch.Generator | None = None, **sampler_options,
) -> Tensor:
    """``n`` uint8 samples of ``model`` (on the CPU) in slices of ``batch_size`` (see
    ``sample_slices``; the seed of each slice comes from ``seed``, or from ``generator``
    when given). Under a process group the ranks draw disjoint slices and every rank
    returns all ``n``, in the same order as one process would draw them."""
    mine = {i: x.cpu() for i, x in sample_slices(model, n, batch_size, seed, generator,
                                                  progress, **sampler_options)}
    mine = zdist.gather_dict(mine)
    return torch.cat([mine[i] for i in sorted(mine)])


__all__ = ["draw_samples", "sample_slices"]
