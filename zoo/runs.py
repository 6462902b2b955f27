"""The run directory format: the files a training run writes, and how to read them back.

A run directory holds ``run.json`` (what was trained, on what, with which options),
``checkpoint.pt`` (everything needed to resume: weights, EMA, optimizers, RNG, step),
``model.pt`` (the weights used for sampling: the EMA weights when EMA is on),
``losses.csv`` and, with streaming evaluation on, ``eval.csv``; ``samples.png`` and the
model card ``README.md`` (``zoo.card``), beside ``eval.json`` and ``nll.json`` once
``zoo eval`` and ``zoo nll`` have measured the run. ``zoo.train`` writes it;
the metrics, the harness and the CLI read it through here, without importing the Trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .core import MODEL_FILE, CheckpointError, ConfigError, GenerativeModel
from .readers import read_json

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
LOSSES_FILE = "losses.csv"
EVAL_FILE = "eval.csv"
SAMPLES_FILE = "samples.png"  # a grid drawn at the end of training (the model card's)
CARD_FILE = "README.md"  # the model card (zoo.card)
EVAL_JSON = "eval.json"  # zoo eval's result
NLL_JSON = "nll.json"  # zoo nll's result


def check_folder(path: str | Path, what: str = "run directory") -> Path:
    """``path`` when it is a folder or can be made one (the directory a run or a benchmark
    writes, before its lock is taken); a ConfigError naming the file in the way otherwise."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.is_dir():
            return path
        if p.exists() or p.is_symlink():
            where = "it" if p == path else p
            raise ConfigError(f"{what} {path} cannot be a folder: {where} is a file; give "
                              "a folder (it is made when missing)")
    return path


def load_run(path: str | Path, map_location="cpu") -> GenerativeModel:
    """Load the model of a run directory (its EMA weights) or of a model file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"{path} does not exist; give a run directory (zoo train ... --out DIR) or a model file"
        )
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise CheckpointError(
                f"{path} holds no trained model ({MODEL_FILE} is missing); "
                "train one with `zoo train MODEL --dataset D --out DIR`"
            )
        path = path / MODEL_FILE
    return GenerativeModel.load(path, map_location=map_location)


#: run.json's keys and their JSON types: those every run.json has, and those that a run.json
#: of an older zoo may lack
_RUN_REQUIRED = {"model": str, "dataset": str, "train_config": dict}
_RUN_OPTIONAL = {"family": str, "dataset_sha256": str, "image_shape": list,
                 "model_config": dict, "params": int, "world_size": int, "classes": list,
                 "trained": dict, "command": str}
#: the keys inside run.json's objects that its readers (the model card, resuming) use, and
#: their JSON types (``NoneType``: null allowed)
_RUN_NESTED = {
    "train_config": {"steps": (int, type(None)), "seconds": (int, float, type(None)),
                     "batch_size": (int,), "seed": (int,), "sample_n": (int,),
                     "device": (str,), "compile": (bool,)},
    "trained": {"steps": (int,), "seconds": (int, float), "images_per_s": (int, float),
                "device": (str,), "finished": (str,)},
}
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a number", bool: "true or false", type(None): "null"}


def _json_type(value) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _huge(value) -> bool:
    """An integer beyond 64 bits: JSON allows it, but no count or seed zoo writes is one, and
    the card's arithmetic on it (``params / 1e6``) would overflow."""
    return type(value) is int and not -2**63 <= value < 2**63


def run_info(path: str | Path) -> dict:
    """The run.json of a run directory, checked ({} for a bare model file, or a directory
    without one). Every reader of run.json goes through here: a file that is not JSON, not
    an object, lacks a key or holds a value of the wrong type is one CheckpointError that
    names the file and what is wrong."""
    p = Path(path) / RUN_FILE
    if not p.is_file():
        return {}
    fix = "restore it, or train the run again"
    try:
        info = read_json(p, "run information", CheckpointError)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {fix}") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{p} holds {_json_type(info)}, not an object of run "
                              f"information; {fix}")
    missing = [k for k in _RUN_REQUIRED if k not in info]
    if missing:
        raise CheckpointError(f"{p} lacks the key {missing[0]!r}; {fix}")
    for key, tp in {**_RUN_REQUIRED, **_RUN_OPTIONAL}.items():
        if key not in info:
            continue
        value = info[key]
        ok = isinstance(value, tp) and not (isinstance(value, bool) and tp is not bool) \
            and not _huge(value)
        if ok and key == "image_shape":
            ok = len(value) == 3 and all(type(s) is int and s > 0 for s in value)
        if ok and key == "classes":
            ok = all(isinstance(s, str) for s in value)
        if not ok:
            want = {"image_shape": "3 positive integers",
                    "classes": "a list of strings"}.get(key, _JSON_NAMES[tp])
            want += " of at most 64 bits" if _huge(value) else ""
            raise CheckpointError(f"{p}: {key} must be {want}, got {_json_type(value)} "
                                  f"{json.dumps(value)[:60]}; {fix}")
    for key, fields in _RUN_NESTED.items():
        for name, types in fields.items():
            if name not in info.get(key, {}):
                continue
            value = info[key][name]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types) \
                    or _huge(value):
                want = " or ".join(dict.fromkeys(_JSON_NAMES[t] for t in types))
                want += " of at most 64 bits" if _huge(value) else ""
                raise CheckpointError(f"{p}: {key}: {name} must be {want}, got "
                                      f"{_json_type(value)} {json.dumps(value)[:60]}; {fix}")
    return info


def device_name(device: torch.device) -> str:
    """A device in words, as run.json records it: ``cuda (NVIDIA H200)``, ``cpu``."""
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


__all__ = [
    "CARD_FILE",
    "CHECKPOINT_FILE",
    "EVAL_FILE",
    "EVAL_JSON",
    "NLL_JSON",
    "SAMPLES_FILE",
    "LOSSES_FILE",
    "MODEL_FILE",
    "RUN_FILE",
    "device_name",
    "load_run",
    "run_info",
]
