"""Model names -> classes and default configs (per dataset); ``create`` builds one."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from functools import cache

from . import models as _models_pkg
from . import options as zoptions
from .core import ConfigError, GenerativeModel, ModelSpec, build_model, config_from_dict


@cache
def _specs() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for info in sorted(pkgutil.iter_modules(_models_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{_models_pkg.__name__}.{info.name}")
        specs.update(getattr(module, "MODELS", {}))
    return specs


def available() -> list[str]:
    """The registered model names."""
    return sorted(_specs())


def spec(name: str) -> ModelSpec:
    specs = _specs()
    if name not in specs:
        raise ConfigError(f"unknown model {name!r}; available models: {', '.join(sorted(specs))}")
    return specs[name]


def config_fields(name: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(spec(name).cls.Config)}


def filled_fields(name: str) -> set[str]:
    """The config fields of model ``name`` that zoo fills in itself (a latent model's record
    of its autoencoder): in run.json, but not options a user gives."""
    return {k for k, f in config_fields(name).items() if f.metadata.get("filled")}


def parse_value(name: str, key: str, text: str):
    """Turn the string of ``--set key=value`` into the type of config field ``key``."""
    fields = config_fields(name)
    if key not in fields:
        raise ConfigError(
            f"unknown option {key!r} for {name}; valid options: {', '.join(fields)}"
        )
    return zoptions.parse_value(text, fields[key].type, f"{name} option {key}")


def create(
    name: str,
    dataset=None,
    image_shape: tuple[int, int, int] | None = None,
    **overrides,
) -> GenerativeModel:
    """Build model ``name`` for ``dataset`` (or an explicit ``image_shape``).

    ``dataset`` is a built-in name, a folder or array file, or a spec with options
    (``"path?size=32"``, ``{"path": ..., "size": 32}``): the model is built for the image
    shape it loads as. Config = class defaults < the name's defaults < the built-in
    dataset's defaults < ``overrides``.
    """
    s = spec(name)
    key = None
    if dataset is not None:
        from . import data as zdata

        ds = zdata.spec(dataset)
        key = ds.source if ds.builtin else None
        if image_shape is None:
            image_shape = zdata.image_shape(ds)
    if image_shape is None:
        raise ConfigError("create() needs dataset=... or image_shape=(C, H, W)")
    given = sorted(set(overrides) & filled_fields(name))
    if given:
        source = config_fields(name)[given[0]].metadata.get("from")
        raise ConfigError(f"{', '.join(given)} of {name} {'is' if len(given) == 1 else 'are'} "
                          f"filled in by zoo{f' from {source}' if source else ''} when the "
                          "model is built, not given")
    values = {**s.defaults, **s.dataset_defaults.get(key, {}), **overrides}
    if values.get("conditional") and values.get("num_classes") is None:
        values["num_classes"] = _num_classes(name, dataset)
    config = config_from_dict(s.cls.Config, values)
    model = build_model(s.cls, config, image_shape)  # too large: refused before allocating
    model.name = name
    return model


def _num_classes(name: str, dataset) -> int:
    """The class count of a conditional model's training data (its labels' classes)."""
    if "num_classes" not in config_fields(name):
        raise ConfigError(f"{name} has no class-conditional form (no 'conditional' option)")
    if dataset is None:
        raise ConfigError(f"a conditional {name} needs dataset=... (whose labels give the "
                          "number of classes) or num_classes=K")
    from . import data as zdata

    info = zdata.describe(dataset)
    if info["num_classes"] < 2:
        what = (f"has one class ({info['classes'][0]!r}), and a conditional model needs at "
                "least two" if info["num_classes"] == 1 else "has no class labels, so a "
                "conditional model cannot train on it")
        raise ConfigError(f"{info['name']} {what}: give a folder with one subfolder per class, "
                          "or train unconditionally")
    return int(info["num_classes"])


def families() -> dict[str, type[GenerativeModel]]:
    """Each family's model class (the first registered), in registration order."""
    out: dict[str, type[GenerativeModel]] = {}
    for s in _specs().values():
        out.setdefault(s.cls.family, s.cls)
    return out


def sampler_class(family, name: str):
    """The ``SamplerOptions`` class that ``family`` declares under ``name`` (None if none)."""
    cls = families().get(str(family))
    return next((s for s in cls.samplers if s.name == name), None) if cls else None
