"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
import tomllib
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

import zoo

#: float32 results stored on one machine and recomputed on another differ by rounding: a
#: different summation order or vector width moves a reduction over D terms by a few units
#: in the last place. 64 ulps (relative 7.6e-6) covers that and nothing a bug would change.
FLOAT32_RTOL = 64 * 1.1920929e-07


def assert_float32_close(actual, expected) -> None:
    """``actual`` equals a float32 result stored on another machine, up to rounding."""
    torch.testing.assert_close(actual, expected, rtol=FLOAT32_RTOL, atol=0.0)


# -- a tiny benchmark suite ----------------------------------------------------------------------
#: The suite tests run when they need a real one: one MLP VAE trained for 3 steps on MNIST,
#: measured on a few samples with the small classifier's features, timed at one batch size.
TINY_MODEL = {
    "name": "vae-mlp",
    "config": {"hidden": 32, "latent_dim": 4, "nll_samples": 2},
    "budget": {"steps": 3},
    "batch_size": 16,
    "train": {"ema_decay": 0.0},
}

TINY_SUITE = {
    "name": "tiny",
    "seed": 3,
    "device": "cpu",
    "datasets": ["mnist"],
    "evaluation": {
        "n_samples": 50,
        "extractor": "classifier",
        "metrics": ["fid", "kid"],
        "n_reference": 200,
        "nll_images": 16,
        "batch_size": 50,
        "grid_images": 4,
    },
    "timing": {"batch_sizes": [2], "repeats": 1, "warmup": 0},
    "models": [TINY_MODEL],
}

#: the suite tables whose overrides are merged key by key rather than replaced
_MERGED_TABLES = ("evaluation", "timing", "defaults")


def _merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` replacing its keys; an override of None deletes the key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_model(**overrides) -> dict:
    """The tiny suite's model entry (a dict), its keys replaced by ``overrides`` (None: gone)."""
    return _merged(TINY_MODEL, overrides)


def tiny_suite_dict(**overrides) -> dict:
    """The tiny suite as a dict: ``overrides`` replace top-level keys (None deletes one),
    except ``evaluation``, ``timing`` and ``defaults``, which are merged key by key (a value
    of None deletes that key); ``models=[...]`` replaces the model list."""
    tables = {k: overrides.pop(k) for k in _MERGED_TABLES if overrides.get(k) is not None}
    suite = _merged(TINY_SUITE, overrides)
    for key, table in tables.items():
        suite[key] = _merged(suite.get(key, {}), table)
    return suite


def tiny_suite(**overrides) -> str:
    """The TOML text of :func:`tiny_suite_dict` (same arguments); it parses back to that dict."""
    suite = tiny_suite_dict(**overrides)
    text = to_toml(suite)
    assert tomllib.loads(text) == suite, text
    return text


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(s: str) -> str:
    return '"' + "".join(
        _ESCAPES.get(c) or (f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
        for c in s) + '"'


def _toml_value(value) -> str:
    """A TOML value on one line: nested dicts become inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r} ({type(value).__name__})")


def _is_table_array(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, dict) for v in value)


def to_toml(doc: dict) -> str:
    """TOML text for a suite-shaped dict: top-level values first, then a ``[table]`` for each
    dict, then a ``[[name]]`` array of tables for each non-empty list of dicts; anything
    nested deeper is written inline."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and not _is_table_array(v)]
    for key, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{_toml_key(key)}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    for key, tables in doc.items():
        if _is_table_array(tables):
            for table in tables:
                lines.append(f"[[{_toml_key(key)}]]")
                lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# -- tiny models -----------------------------------------------------------------------------------

TINY_DDPM = {"channels": 8, "norm_groups": 4, "timesteps": 20, "max_levels": 2}


def tiny_ddpm():
    torch.manual_seed(0)
    return zoo.create("ddpm", image_shape=(1, 8, 8), **TINY_DDPM).eval()


def nonzero(model):
    """``model`` with its U-Net's zero-initialised weights (a fresh model's output layers)
    drawn from N(0, 0.05^2), so samplers, bounds and losses see a real network output."""
    with torch.no_grad():
        for p in model.net.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.normal_(0.0, 0.05)
    return model


def nonzero_ddpm(config: dict, seed: int = 0, image_shape=(1, 8, 8)):
    """A DDPM whose U-Net output is not zero (``nonzero``)."""
    from zoo.models.diffusion import DDPM, DDPMConfig

    torch.manual_seed(seed)
    m = DDPM(DDPMConfig(**config), image_shape)
    nonzero(m)
    return m.eval()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- conditional models on MNIST at 14x14 ----------------------------------------------------------


def mnist_14(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST mean-pooled 2x2 to 14x14 uint8 images and their labels: a quarter of the pixels
    (and of a U-Net's FLOPs, a sixteenth of a Transformer's attention), for the tests that
    train a conditional model and check that it draws the class asked for."""
    import torch.nn.functional as F

    import zoo.data

    x, y = zoo.data.load("mnist", split)
    return F.avg_pool2d(x.float(), 2).round().to(torch.uint8), y


def class_accuracy_14(samples: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of 14x14 ``samples`` that the shipped MNIST classifier, shown them upsampled
    (nearest) to 28x28, labels as asked. The first 2000 real test digits pooled and upsampled so:
    0.967."""
    import torch.nn.functional as F

    from zoo.metrics.features import load_classifier

    clf, _ = load_classifier("mnist-classifier")
    big = F.interpolate(samples.float(), scale_factor=2, mode="nearest").to(torch.uint8)
    with torch.no_grad():
        return (clf(big)[1].argmax(1) == labels).float().mean().item()


# -- the command line ------------------------------------------------------------------------------


def run_zoo(*args, check=True, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "ZOO_OFFLINE": "1"}, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"zoo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def zoo_main(*args, check=True) -> subprocess.CompletedProcess:
    """``zoo ARGS`` run in this process (``zoo.cli.main``), its stdout and stderr captured:
    what ``run_zoo`` returns without the two seconds of starting Python and torch. For a
    test of the command's behaviour, not of the process (signals, exit at import)."""
    import contextlib
    import io

    from zoo.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's own exits
            code = e.code if isinstance(e.code, int) else 2
    proc = subprocess.CompletedProcess(["zoo", *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"zoo {' '.join(map(str, args))} failed:\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("zoo: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- a CUDA graph's semantics on the CPU ----------------------------------------------------------


class _Slot:  # a tensor made inside the captured loop (the graph's own memory pool)
    def __init__(self, i):
        self.i = i


class _Outside:  # a tensor from outside, which a graph reads without holding a reference
    def __init__(self, tensor):
        self.ref = weakref.ref(tensor)


class StandInGraph(TorchDispatchMode):
    """A CUDA graph's semantics on the CPU: the capture records every aten op with Python
    scalars baked in, tensors made inside as slots of its own pool, and tensors from outside
    by weak reference only; replay() re-runs the ops and fails when a tensor from outside
    has been freed since the capture (a real graph would read reused memory there), and a
    host synchronisation during the capture fails as it does on CUDA."""

    def __init__(self):
        super().__init__()
        self.ops, self.pool, self.slots = [], [], {}

    def _ref(self, x):
        if not isinstance(x, torch.Tensor):
            return x
        return _Slot(self.slots[id(x)]) if id(x) in self.slots else _Outside(x)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            raise AssertionError("a host synchronisation inside a captured loop")
        out = func(*args, **kwargs)
        inputs = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]

        def slot(x):
            if not isinstance(x, torch.Tensor) or any(x is y for y in inputs):
                return self._ref(x)  # an in-place op returns its input
            self.slots[id(x)] = len(self.pool)
            self.pool.append(x)
            return _Slot(self.slots[id(x)])

        self.ops.append((func, tree_map(self._ref, args), tree_map(self._ref, kwargs),
                         tree_map(slot, out)))
        return out

    def replay(self):
        now = [None] * len(self.pool)

        def resolve(x):
            if isinstance(x, _Slot):
                return now[x.i]
            if isinstance(x, _Outside):
                tensor = x.ref()
                assert tensor is not None, "the graph reads a tensor freed since its capture"
                return tensor
            return x

        for func, args, kwargs, out in self.ops:
            result = func(*tree_map(resolve, args), **tree_map(resolve, kwargs))
            for where, value in zip(tree_flatten(out)[0], tree_flatten(result)[0], strict=True):
                if isinstance(where, _Slot):
                    now[where.i] = value
        if self.output_slot is not None:  # the graph writes its output where it was captured
            self.pool[self.output_slot].copy_(now[self.output_slot])


def capture_on_cpu(loop, warmup, device):
    warmup()
    graph = StandInGraph()
    with graph:
        out = loop()
    graph.output_slot = graph.slots.get(id(out))
    # like a graph's pool, keep the memory made inside, not the Python objects (views keep
    # their bases alive): only the output, which the replay writes back into
    graph.pool = [out if i == graph.output_slot else None for i in range(len(graph.pool))]
    graph.slots = {}
    return graph, out


# -- the documentation -----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
_FENCED = re.compile(r"\s*```(\w*)\n(.*?)```", re.S)


def doc_files() -> list[Path]:
    """The README and the pages of docs/, where the worked examples live."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_example(name: str) -> tuple[dict[str, str], str]:
    """The fenced blocks right after ``<!-- example: NAME -->`` by language (``{"python":
    code, "text": what it prints}``) and the file that holds it, relative to the repository
    (for ``compile``). Exactly one place in README.md and docs/*.md holds each example."""
    marker = f"<!-- example: {name} -->"
    found = [p for p in doc_files() for _ in range(p.read_text().count(marker))]
    assert len(found) == 1, f"{marker} is in {len(found)} places of README.md and docs/*.md"
    text = found[0].read_text()
    pos, blocks = text.index(marker) + len(marker), {}
    while m := _FENCED.match(text, pos):
        blocks[m.group(1)], pos = m.group(2), m.end()
    where = str(found[0].relative_to(ROOT))
    assert "python" in blocks, f"{where} has no python block after {marker}"
    return blocks, where
