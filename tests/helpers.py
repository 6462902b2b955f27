"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import copy
import math
import re
import tomllib

import torch

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
