"""Whole sampling loops replayed as CUDA graphs, shared by the diffusion and the
autoregressive samplers.

A sampler whose every step has static shapes (DDIM/DDPM over a fixed batch; the
Transformer's cached decoding, whose step t always reads the same slice of its key/value
cache) is captured once as one graph per (options, batch size, autocast state, weights) and
replayed: one launch instead of one Python dispatch per kernel. Its randomness is drawn
before the replay, in the order the eager loop draws it, so the graph gives the same
samples as the eager loop for the same generator.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

import torch
from torch import nn

from ..core import ConfigError, option_flag
from ..progress import uncounted

NOISE_BYTES = 1 << 30  # a captured sampler pre-draws its noise; beyond this it runs eagerly
MAX_GRAPHS = 4  # each graph holds its own memory pool


_local = threading.local()


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Within the block every sampler runs its eager loop, whatever its ``cuda_graph``
    option (for counting FLOPs: a replayed graph runs nothing a counter sees)."""
    before = getattr(_local, "eager", False)
    _local.eager = True
    try:
        yield
    finally:
        _local.eager = before


def graph_mode(value, device: torch.device) -> tuple[bool, bool]:
    """Parse a ``cuda_graph`` option ("auto", or a flag) into (wanted, auto); never wanted
    inside ``eager()``."""
    auto = isinstance(value, str) and value.strip().lower() == "auto"
    if not auto:
        try:
            value = option_flag(value, "cuda_graph")
        except ConfigError:
            raise ConfigError(f"cuda_graph must be 'auto', true or false, got {value!r}") from None
    wanted = device.type == "cuda" if auto else value
    if wanted and device.type != "cuda":
        raise ConfigError(f"cuda_graph=true needs the model on a CUDA device, not {device}")
    return wanted and not getattr(_local, "eager", False), auto


class LoopGraphs:
    """The captured loops of one model, keyed by whatever fixes their shapes and weights."""

    def __init__(self):
        self.graphs: OrderedDict[Hashable, tuple] = OrderedDict()
        self.seen: set[Hashable] = set()

    def worth_it(self, key: Hashable, auto: bool) -> bool:
        """Whether to replay a graph for ``key``: always when asked for explicitly; in "auto"
        mode from the second time the key comes up (a one-off batch is not worth a capture)."""
        hit = not auto or key in self.seen
        self.seen.add(key)
        return hit

    def get(self, key: Hashable, weights: Hashable, build: Callable[[], tuple]) -> tuple:
        """The entry for ``key`` with the model's ``weights`` (``weights_key``), made by
        ``build()`` (which captures) the first time. The entry must hold every tensor the
        graph reads or writes outside its own pool: the graph keeps no reference to them.
        Entries of other weights (a moved or reloaded model) are dropped, and beyond
        ``MAX_GRAPHS`` the least recently used."""
        full = (key, weights)
        if full in self.graphs:
            self.graphs.move_to_end(full)
            return self.graphs[full]
        for old in [k for k in self.graphs if k[1] != weights]:
            del self.graphs[old]
        while len(self.graphs) >= MAX_GRAPHS:
            self.graphs.popitem(last=False)
        self.graphs[full] = build()
        return self.graphs[full]


def model_graphs(model: nn.Module) -> LoopGraphs:
    """The model's ``LoopGraphs`` (kept out of its state_dict and its submodules)."""
    return model.__dict__.setdefault("_loop_graphs", LoopGraphs())


def release_graphs(model: nn.Module) -> None:
    """Drop the model's captured loops and the memory they hold (e.g. after training)."""
    model.__dict__.pop("_loop_graphs", None)


def weights_key(module: nn.Module) -> tuple:
    """What invalidates a capture besides the options: autocast, and the weights' storage
    and dtypes."""
    return (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"),
            *((p.data_ptr(), p.dtype) for p in module.parameters()))


def capture(loop: Callable[[], object], warmup: Callable[[], object],
            device: torch.device) -> tuple[torch.cuda.CUDAGraph, object]:
    """Capture ``loop()`` as a CUDA graph after running ``warmup()`` (a short piece of the
    same work, so lazy initialisations happen outside the capture) on a side stream.
    Returns the graph and what ``loop()`` returned (static tensors the replay rewrites)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), uncounted():  # no sampling steps shown: only replays are
        warmup()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), uncounted():
        out = loop()
    return graph, out
