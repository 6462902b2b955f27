"""Benchmark suites: a TOML file read into dataclasses and checked before anything runs.

A suite names its datasets and models; each model has config overrides, a training budget
(steps and/or seconds), a batch size and a list of sampler variants. Suite-level tables
(``[defaults]``, ``[evaluation]``, ``[timing]``) give defaults that a model overrides with
tables of the same name. Every mistake is a ``ConfigError`` naming the file and the key
path (``models[2].budget.steps``), raised before any training starts.

The suites zoo ships (``zoo/suites/*.toml``, package data) run by name: ``load_suite("ci")``,
``zoo bench ci``; ``zoo bench list`` prints them with their ``description``. A path to
a file of your own works the same way.

```toml
name = "smoke"                 # default: the file's stem
description = "..."            # one line for `zoo bench list`
seed = 0
seeds = 1                      # training seeds per model: seed, seed + 1, ... (a model's
                               # own seeds = K overrides); with K > 1, one row per seed
                               # and their aggregate (zoo.bench.seeds)
device = "auto"                # auto, cpu, cuda, cuda:N
datasets = ["mnist"]

[defaults]                     # per-model keys every model inherits
batch_size = 32
budget = { steps = 10 }        # steps, seconds and/or training flops (whichever ends
                               # first); flops = 4e12: every model the same compute
train = { ema_decay = 0.0 }    # Trainer options (zoo.train.TrainConfig fields)

[evaluation]
n_samples = 200                # generated images per sampler variant
ref_split = "test"
extractor = "classifier"       # the dataset's classifier; or inception-v3-compat, None
metrics = ["fid", "kid", "is", "pr"]
nll_images = 100               # the first N images of ref_split
batch_size = 500
grid_images = 64
bootstrap = 200                # resamples behind each figure's 95% interval (0: none)
curve = [0.25, 0.5, 1.0]       # quality along the way (curve.jsonl): fractions of the budget
curve_n_samples = 500          # ... measured at one N, with curve_metrics (fid, kid) and
curve_nll_images = 200         # ... NLL on this many images (0: none)
recon_images = 1000            # reconstruction figures' images (default: n_samples)

[timing]
batch_sizes = [1, 16]          # sampling throughput and latency at each
repeats = 3
warmup = 1

[[models]]
name = "MODEL"                 # a registered model name (zoo list)
id = "MODEL-tiny"              # the row's model name (default: name); must be unique
config = { }                   # model config overrides
budget = { steps = 5 }
nll = { }                      # options of model.nll
samplers = [                   # sampler options (model.sample's), plus n_samples / timing
    { sampler = "A", n_samples = 50, timing = { batch_sizes = [1] } },
    { sampler = "B", steps = 5 },
]
timing = { repeats = 2 }       # overrides [timing] for this model
datasets = ["mnist"]           # only these of the suite's datasets (default: all)

[[models]]                     # a latent model over an autoencoder entry of this suite
name = "vq-transformer"        # (or latent-diffusion over a kl-autoencoder)
autoencoder = "vq-vae"         # that entry's id: trained first (its own budget, reused
                               # when its hash matches), its run passed as the model's
                               # autoencoder option; its weights' hash is in this hash
```

A model that ``reconstruct``s (an autoencoder, a latent model) also gets reconstruction
figures on ``[evaluation] recon_images`` images (default: ``n_samples``) of ``ref_split``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import ConfigError
from ..images import MAX_GRID_IMAGES
from ..metrics import registry as metric_registry
from ..options import OptionError, check_seed
from ..readers import read_toml


@dataclass
class Budget:
    """A training budget: steps, seconds and/or training FLOPs (whichever ends first). FLOPs
    are the model's counted training FLOPs per image times the images seen, turned into
    steps before training, so a FLOPs budget is as reproducible as a steps one."""

    steps: int | None = None
    seconds: float | None = None
    flops: float | None = None

    def as_dict(self) -> dict:
        return {"steps": self.steps, "seconds": self.seconds, "flops": self.flops}


@dataclass
class Evaluation:
    n_samples: int = 1000
    ref_split: str = "test"
    extractor: str | None = None  # None: the dataset's default (announced, recorded)
    # names of zoo.metrics.registry; default: its default set (fid, kid, is, pr)
    metrics: tuple[str, ...] = dataclasses.field(default_factory=metric_registry.default_metrics)
    n_reference: int | None = None  # None: the whole reference split
    nll_images: int = 1000
    nll_batch_size: int = 256
    batch_size: int = 500
    grid_images: int = 64
    bootstrap: int = 200  # resamples behind each figure's 95% interval (0: none)
    # quality along the way: fractions of the budget at which the model (EMA weights) is
    # measured into curve.jsonl; the whole budget (1.0) is always one of them
    curve: tuple[float, ...] = ()
    curve_n_samples: int = 500  # one N for every point of every model: comparable figures
    curve_metrics: tuple[str, ...] = dataclasses.field(
        default_factory=metric_registry.curve_metrics)
    curve_nll_images: int = 200  # 0: no NLL along the way
    # reconstruction figures (autoencoders, latent models): the first N images of
    # ref_split (None: n_samples)
    recon_images: int | None = None


@dataclass
class Timing:
    batch_sizes: tuple[int, ...] = (1, 64)
    repeats: int = 5
    warmup: int = 1
    latency_batch_size: int | None = None  # the headline batch size (default: the largest)
    # CUDA: also time the largest batch that fits in memory (doubling from the largest of
    # batch_sizes, at most max_batch_limit); nothing on the CPU
    max_batch: bool = False
    max_batch_limit: int = 16384


@dataclass
class Variant:
    """One sampler variant: the options passed to ``model.sample`` and, once the suite is
    checked against the model, the sampler's bound options (``zoo.options``), which are
    the row's identity."""

    options: dict
    n_samples: int | None = None  # overrides the model's evaluation.n_samples
    timing: Timing | None = None  # overrides the model's timing
    sampler: Any = None  # the bound SamplerOptions (set by load_suite)

    @property
    def name(self) -> str:
        return self.sampler.name

    @property
    def canonical(self) -> dict:
        return self.sampler.canonical()

    @property
    def key(self) -> tuple:
        return self.sampler.key()

    @property
    def label(self) -> str:
        return self.sampler.label()

    @property
    def slug(self) -> str:
        return re.sub(r"[^\w.]+", "-", self.label).strip("-") or "default"


@dataclass
class ModelEntry:
    name: str  # registry name
    id: str  # the row's model column
    family: str
    config: dict
    budget: Budget
    batch_size: int
    train: dict
    nll: dict
    variants: list[Variant]
    evaluation: Evaluation
    timing: Timing
    autoencoder: str | None = None  # the id of the autoencoder entry it works over
    datasets: list[str] | None = None  # the suite's datasets it runs on (None: all)
    seeds: int = 1  # training runs, seeds suite.seed, suite.seed + 1, ...

    def train_seeds(self, seed: int) -> list[int]:
        """The training seeds of this entry in a suite of ``seed``."""
        return [seed + i for i in range(self.seeds)]

    def runs_on(self, dataset: str) -> bool:
        return self.datasets is None or dataset in self.datasets


@dataclass
class Suite:
    name: str
    path: Path
    seed: int
    device: str
    datasets: list[str]  # labels: built-in names, or a folder's / array's name
    models: list[ModelEntry]
    description: str = ""
    #: label -> the parsed dataset spec (``zoo.dataspec.DatasetSpec``), parsed once here
    sources: dict[str, Any] = dataclasses.field(default_factory=dict)

    def spec(self, label: str):
        """The parsed dataset spec of a label (``zoo.data.load`` and ``zoo.create`` take it)."""
        return self.sources.get(label, label)

    def source(self, label: str) -> str:
        """The canonical spec string of a label (what run.json and config hashes record)."""
        return str(self.spec(label))

    def entry(self, model_id: str) -> ModelEntry:
        """The model entry of an id."""
        return next(m for m in self.models if m.id == model_id)

    def rows(self, only_model: str | None = None, only_dataset: str | None = None):
        """(dataset, model entry, variant) of every row, in run order."""
        for d in self.datasets:
            if only_dataset is not None and d != only_dataset:
                continue
            for m in self.models:
                if only_model is not None and only_model not in (m.id, m.name):
                    continue
                if not m.runs_on(d):
                    continue
                for v in m.variants:
                    yield d, m, v


# -- parsing ---------------------------------------------------------------------------------
_TOP = {"name", "description", "seed", "seeds", "device", "datasets", "defaults", "evaluation",
        "timing", "models"}
_MODEL = {"name", "id", "config", "budget", "batch_size", "train", "nll", "samplers",
          "evaluation", "timing", "autoencoder", "datasets", "seeds"}
_DEFAULTS = {"budget", "batch_size", "train"}
BUDGET_KEYS = ("steps", "seconds", "flops")
_RUNNER_TRAIN = {"steps", "seconds", "batch_size", "seed", "device"}  # set by the suite


class _Ctx:
    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {msg}")


def _type_name(tp) -> str:
    return " or ".join(t.__name__ for t in tp) if isinstance(tp, tuple) else tp.__name__


def _get(ctx: _Ctx, table: dict, key: str, tp, where: str, default=None):
    if key not in table:
        return default
    v = table[key]
    ok = isinstance(v, tp) and not (isinstance(v, bool) and bool not in _as_tuple(tp))
    if not ok:
        raise ctx.error(where, f"must be {_type_name(tp)}, got {type(v).__name__} {v!r}")
    return v


def _as_tuple(tp):
    return tp if isinstance(tp, tuple) else (tp,)


def _unknown(ctx: _Ctx, table: dict, allowed, where: str) -> None:
    extra = sorted(set(table) - set(allowed))
    if extra:
        at = f"{where}.{extra[0]}" if where else extra[0]
        raise ctx.error(at, f"unknown key; valid keys here: {', '.join(sorted(allowed))}")


def _table(ctx: _Ctx, table: dict, key: str, where: str) -> dict:
    return dict(_get(ctx, table, key, dict, where, {}))


def _folder_name(ctx: _Ctx, value: str, where: str) -> str:
    """A suite value that names a folder under ``--out`` (a model id, a dataset label):
    refused when, joined to a path, it could point anywhere else."""
    if (value in ("", ".", "..") or any(c in value for c in "/\\\0") or os.path.isabs(value)
            or any(ord(c) < 32 for c in value)):
        raise ctx.error(where, f"{value!r} cannot name a folder under --out: give a plain name "
                        "(no '/', '\\', '..', control characters or absolute path)")
    return value


MAX_SEEDS = 1000  #: training seeds per model


def _seeds(ctx: _Ctx, table: dict, where: str, default: int, seed: int) -> int:
    """``seeds = K`` of a table (``default`` when absent): a whole number in [1, MAX_SEEDS]
    whose last training seed (``seed + K - 1``) torch takes."""
    key = where.rpartition(".")[2]
    if key not in table:
        return default
    v = table[key]
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SEEDS:
        raise ctx.error(where, f"must be a whole number of training seeds from 1 to "
                        f"{MAX_SEEDS}, got {type(v).__name__} {v!r}")
    try:
        check_seed(seed + v - 1, f"the last training seed (seed + {v} - 1)")
    except ConfigError as e:
        raise ctx.error(where, str(e)) from None
    return v


def _positive(ctx: _Ctx, v, where: str, zero_ok: bool = False):
    if v is not None and (v < 0 or (v == 0 and not zero_ok) or v != v or v == math.inf):
        raise ctx.error(where, f"must be {'>= 0' if zero_ok else '> 0'} (a finite number), "
                        f"got {v}")
    return v


def _dataclass_from(ctx: _Ctx, cls, table: dict, where: str, base=None):
    """Fill dataclass ``cls`` from ``table`` over ``base`` (an instance), checking types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _unknown(ctx, table, fields, where)
    values = dataclasses.asdict(base) if base is not None else {}
    for k, v in table.items():
        at = f"{where}.{k}"
        default = getattr(cls(), k)
        ann = fields[k].type
        if isinstance(default, tuple) or "tuple" in str(ann):
            if not isinstance(v, list) or (not v and default):
                raise ctx.error(at, f"must be a non-empty list, got {v!r}")
            inner = float if "float" in str(ann) else int if "int" in str(ann) else str
            accept = (int, float) if inner is float else inner
            for item in v:
                if not isinstance(item, accept) or isinstance(item, bool):
                    raise ctx.error(at, f"items must be {inner.__name__}, got {item!r}")
            values[k] = tuple(inner(x) for x in v)
        elif isinstance(default, bool):
            values[k] = _get(ctx, table, k, bool, at)
        elif "float" in str(ann):
            values[k] = _get(ctx, table, k, (int, float), at)
        elif "int" in str(ann):
            values[k] = _get(ctx, table, k, int, at)
        else:
            values[k] = _get(ctx, table, k, str, at)
    return cls(**values)


def _check_evaluation(ctx: _Ctx, e: Evaluation, where: str) -> None:
    for k in ("n_samples", "nll_batch_size", "batch_size"):
        _positive(ctx, getattr(e, k), f"{where}.{k}")
    _positive(ctx, e.nll_images, f"{where}.nll_images", zero_ok=True)
    _positive(ctx, e.bootstrap, f"{where}.bootstrap", zero_ok=True)
    _positive(ctx, e.curve_nll_images, f"{where}.curve_nll_images", zero_ok=True)
    if any(not 0 < f <= 1 for f in e.curve) or len(set(e.curve)) != len(e.curve):
        raise ctx.error(f"{where}.curve", "must be distinct fractions of the budget in (0, 1], "
                        f"e.g. [0.25, 0.5, 1.0]; got {list(e.curve)}")
    _check_metrics(ctx, e.curve_metrics, e.curve_n_samples, f"{where}.curve_metrics",
                   f"{where}.curve_n_samples")
    _positive(ctx, e.grid_images, f"{where}.grid_images", zero_ok=True)
    if e.grid_images > MAX_GRID_IMAGES:
        raise ctx.error(f"{where}.grid_images", f"must be <= {MAX_GRID_IMAGES}, got "
                        f"{e.grid_images}")
    if e.n_samples < 4:
        raise ctx.error(f"{where}.n_samples", f"must be >= 4 (precision/recall needs 4), "
                        f"got {e.n_samples}")
    if e.ref_split not in ("train", "test"):
        raise ctx.error(f"{where}.ref_split", f"must be 'train' or 'test', got {e.ref_split!r}")
    _check_metrics(ctx, e.metrics, e.n_samples, f"{where}.metrics", f"{where}.n_samples")
    if e.recon_images is not None and e.recon_images < 2:
        raise ctx.error(f"{where}.recon_images", f"must be >= 2, got {e.recon_images}")


def _check_metrics(ctx: _Ctx, metrics, n: int, at_metrics: str, at_n: str) -> None:
    """Known metric names, and enough samples for each."""
    try:
        chosen = metric_registry.normalize_metrics(metrics)
    except ConfigError as err:
        raise ctx.error(at_metrics, str(err)) from None
    for m in chosen:
        need = metric_registry.get(m).min_images
        if n < need:
            raise ctx.error(at_n, f"must be >= {need} ({m} needs {need}), got {n}")


def _check_timing(ctx: _Ctx, t: Timing, where: str) -> None:
    for b in t.batch_sizes:
        _positive(ctx, b, f"{where}.batch_sizes")
    _positive(ctx, t.repeats, f"{where}.repeats")
    _positive(ctx, t.warmup, f"{where}.warmup", zero_ok=True)
    _positive(ctx, t.max_batch_limit, f"{where}.max_batch_limit")
    if t.latency_batch_size is not None and t.latency_batch_size not in t.batch_sizes:
        raise ctx.error(f"{where}.latency_batch_size",
                        f"must be one of batch_sizes {list(t.batch_sizes)}")


def _budget(ctx: _Ctx, table: dict, where: str, base: Budget | None) -> Budget:
    _unknown(ctx, table, BUDGET_KEYS, where)
    b = Budget(**dataclasses.asdict(base)) if base is not None and not table else Budget()
    if table:
        b.steps = _positive(ctx, _get(ctx, table, "steps", int, f"{where}.steps"),
                            f"{where}.steps")
        b.seconds = _positive(ctx, _get(ctx, table, "seconds", (int, float),
                                        f"{where}.seconds"), f"{where}.seconds")
        flops = _positive(ctx, _get(ctx, table, "flops", (int, float), f"{where}.flops"),
                          f"{where}.flops")
        b.flops = None if flops is None else float(flops)
    if b.steps is None and b.seconds is None and b.flops is None:
        raise ctx.error(where, "no training budget: give steps, seconds and/or flops (here "
                        "or in [defaults].budget)")
    return b


def _train_options(ctx: _Ctx, table: dict, where: str) -> dict:
    from ..train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - _RUNNER_TRAIN
    _unknown(ctx, table, fields, where)
    try:  # types and ranges now, not when the model comes to train
        TrainConfig(steps=1, **table).validate()
    except ConfigError as e:
        raise ctx.error(where, str(e)) from None
    return table


def _variant(ctx: _Ctx, raw, where: str, ev: Evaluation, tm: Timing) -> Variant:
    if not isinstance(raw, dict):
        raise ctx.error(where, "must be a table of sampler options like "
                        f"{{sampler = \"NAME\", steps = 50}}, "
                        f"got {raw!r}")
    opts = dict(raw)
    n_samples = _get(ctx, opts, "n_samples", int, f"{where}.n_samples")
    opts.pop("n_samples", None)
    if n_samples is not None:
        _check_evaluation(ctx, dataclasses.replace(ev, n_samples=n_samples), where)
    vtiming = None
    if "timing" in opts:
        vtiming = _dataclass_from(ctx, Timing, _table(ctx, opts, "timing", f"{where}.timing"),
                                  f"{where}.timing", tm)
        _check_timing(ctx, vtiming, f"{where}.timing")
        opts.pop("timing")
    return Variant(opts, n_samples, vtiming)


def _check_model(ctx: _Ctx, entry: ModelEntry, datasets: list, where: str,
                 extra: dict | None = None) -> None:
    """Build the model for each dataset (checks the config overrides) and dry-run each
    sampler variant and the NLL options. ``extra``: config options added per dataset (a
    latent model's autoencoder file)."""
    import torch

    from .. import registry

    for dataset in datasets:
        try:
            model = registry.create(entry.name, dataset=dataset, **entry.config,
                                    **(extra or {}).get(str(dataset), {}))
        except (ConfigError, TypeError, ValueError) as e:
            raise ctx.error(f"{where}.config", f"{e} (for {dataset})") from None
    for i, v in enumerate(entry.variants):
        try:
            named = {"sampler", *(f for cls in model.samplers for f in cls.fields())}
            v.sampler = model.parse_sampler({k: x for k, x in v.options.items() if k in named})
            with torch.no_grad():
                model.sample(0, generator=torch.Generator().manual_seed(0), **v.options)
        except ConfigError as e:
            at = f"{where}.samplers[{i}]" + (f".{e.option}" if isinstance(e, OptionError) else "")
            raise ctx.error(at, str(e)) from None
        if any(v.key == u.key for u in entry.variants[:i]):
            raise ctx.error(f"{where}.samplers[{i}]", "repeats an earlier variant")
    if entry.nll:  # checks the options on an empty batch
        try:
            with torch.no_grad():
                model.nll(torch.zeros(0, *model.image_shape, dtype=torch.uint8), **entry.nll)
            model.describe_nll(**entry.nll)
        except (ConfigError, TypeError, ValueError) as e:
            raise ctx.error(f"{where}.nll", str(e)) from None


def is_latent(name: str) -> bool:
    """Whether registered model ``name`` works over an autoencoder (its config has an
    ``autoencoder`` option: latent-diffusion, vq-transformer)."""
    from .. import registry

    cls = registry.spec(name).cls
    return any(f.name == "autoencoder" for f in dataclasses.fields(cls.Config))


def _entry_datasets(ctx: _Ctx, m: dict, suite_datasets: list[str], where: str):
    """A model entry's ``datasets`` (None: all the suite's), each one of the suite's."""
    chosen = _get(ctx, m, "datasets", list, f"{where}.datasets")
    if chosen is None:
        return None
    if not chosen:
        raise ctx.error(f"{where}.datasets", "give at least one of the suite's datasets (or "
                        "leave the key out for all of them)")
    for j, d in enumerate(chosen):
        if d not in suite_datasets:
            raise ctx.error(f"{where}.datasets[{j}]", f"{d!r} is not one of the suite's "
                            f"datasets ({', '.join(suite_datasets)})")
    if len(set(chosen)) != len(chosen):
        raise ctx.error(f"{where}.datasets", "lists a dataset twice")
    return [d for d in suite_datasets if d in chosen]  # the suite's order


def _check_latent(ctx: _Ctx, models: list[ModelEntry], suite_datasets, sources: dict) -> None:
    """Resolve each ``autoencoder = "ID"``: an earlier or later entry of this suite, an
    autoencoder, on every dataset of the latent entry; then build the latent model over
    a fresh autoencoder of that entry's config for each dataset (its config, samplers and
    NLL options, and that the two kinds fit: a vq-transformer over a vq-vae)."""
    for i, entry in enumerate(models):
        where = f"models[{i}]"
        latent = is_latent(entry.name)
        if entry.autoencoder is None:
            if latent and not entry.config.get("autoencoder"):
                raise ctx.error(f"{where}.autoencoder", f"{entry.name} works over a trained "
                                "autoencoder: give autoencoder = \"ID\", the id of a "
                                f"{_kind_hint(entry.name)} entry of this suite")
            if latent:  # an autoencoder run outside the suite, named in its config
                _check_model(ctx, entry, [sources[d] for d in entry.datasets or suite_datasets],
                             where)
            continue
        ae = _autoencoder_entry(ctx, entry, models, where, latent)
        mine = entry.datasets or suite_datasets
        missing = [d for d in mine if not ae.runs_on(d)]
        if missing:
            raise ctx.error(f"{where}.autoencoder", f"{entry.autoencoder!r} does not run on "
                            f"{', '.join(missing)}, which this entry does; give the two "
                            "entries the same datasets")
        _check_over_fresh(ctx, entry, ae, [sources[d] for d in mine], where)


def _autoencoder_entry(ctx: _Ctx, entry: ModelEntry, models: list[ModelEntry], where: str,
                       latent: bool) -> ModelEntry:
    """The autoencoder entry that latent ``entry`` names (``autoencoder = "ID"``), checked."""
    ref, at = entry.autoencoder, f"{where}.autoencoder"
    index = {e.id: i for i, e in enumerate(models)}
    if not latent:
        raise ctx.error(at, f"{entry.name} does not work over an autoencoder (only the "
                        "latent models do: latent-diffusion, vq-transformer); drop the key")
    if "autoencoder" in entry.config:
        raise ctx.error(f"{where}.config.autoencoder", "give the autoencoder once: the "
                        "entry's autoencoder = \"ID\" (a model of this suite) or "
                        "config.autoencoder = PATH (a run outside it), not both")
    if ref == entry.id:
        raise ctx.error(at, f"{ref!r} is this entry itself; name the id of a "
                        f"{_kind_hint(entry.name)} entry of this suite")
    if ref not in index:
        raise ctx.error(at, f"no model of this suite has the id {ref!r}; ids: "
                        f"{', '.join(e.id for e in models)}")
    ae = models[index[ref]]
    if ae.family != "autoencoder":
        raise ctx.error(at, f"{ref!r} (models[{index[ref]}]) is a {ae.name}, not an "
                        f"autoencoder; name a {_kind_hint(entry.name)} entry")
    return ae


def _check_over_fresh(ctx: _Ctx, entry: ModelEntry, ae: ModelEntry, specs: list,
                      where: str) -> None:
    """``_check_model`` of latent ``entry`` over a fresh, untrained autoencoder of entry
    ``ae``'s config on each dataset; its errors name the autoencoder entry, not a file."""
    import tempfile

    from .. import registry

    with tempfile.TemporaryDirectory(prefix="zoo-suite-") as tmp:
        files = {}
        for source in specs:
            try:
                model = registry.create(ae.name, dataset=source, **ae.config)
            except (ConfigError, TypeError, ValueError):
                continue  # the autoencoder entry's own check names its error
            files[str(source)] = Path(tmp) / f"autoencoder-{len(files)}.pt"
            model.save(files[str(source)])
        extra = {d: {"autoencoder": str(f)} for d, f in files.items()}
        try:
            _check_model(ctx, entry, specs, where, extra)
        except ConfigError as e:
            text = str(e)
            for f in files.values():
                text = text.replace(str(f), f"autoencoder {entry.autoencoder!r}")
            raise ConfigError(text) from None


def _kind_hint(name: str) -> str:
    """The autoencoder model a latent model ``name`` works over (its class says)."""
    from .. import registry

    cls = registry.spec(name).cls if name in registry.available() else None
    return getattr(cls, "autoencoder_model", None) or "autoencoder"


SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"  #: the shipped suites


def shipped_suites() -> dict[str, Path]:
    """{name: file} of the suites zoo ships, by name."""
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.toml"))}


def resolve_suite(suite: str | Path) -> Path:
    """The suite file of ``suite``: a path as given when that file exists, else the shipped
    suite of that name (``ci``, ``smoke``, ...)."""
    path = Path(suite).expanduser()
    if path.is_file():
        return path
    shipped = shipped_suites()
    if str(suite) in shipped:
        return shipped[str(suite)]
    raise ConfigError(f"suite file {suite} does not exist, and no shipped suite has that name "
                      f"(shipped: {', '.join(shipped)}; `zoo bench list` describes them)")


def describe_suites() -> list[tuple[str, str]]:
    """(name, description) of each shipped suite, read without checking the suite."""
    out = []
    for name, path in shipped_suites().items():
        description = read_toml(path, "suite file").get("description", "")
        out.append((name, str(description)))
    return out


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite: a file, or a shipped suite by name (see the module docstring
    for its keys)."""
    path = resolve_suite(path)
    ctx = _Ctx(path)
    raw = read_toml(path, "suite file")
    _unknown(ctx, raw, _TOP, "")
    name = _get(ctx, raw, "name", str, "name", path.stem)
    description = _get(ctx, raw, "description", str, "description", "")
    try:
        seed = check_seed(_get(ctx, raw, "seed", int, "seed", 0))
    except ConfigError as e:
        raise ctx.error("seed", str(e).removeprefix("seed ")) from None
    device = _get(ctx, raw, "device", str, "device", "auto")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ctx.error("device", f"must be auto, cpu, cuda or cuda:N, got {device!r}")
    datasets, sources = _datasets(ctx, raw, path)
    defaults = _defaults(ctx, raw)
    seeds = _seeds(ctx, raw, "seeds", 1, seed)
    models_raw = _get(ctx, raw, "models", list, "models")
    if not models_raw:
        raise ctx.error("models", "give at least one [[models]] table")
    models: list[ModelEntry] = []
    for i, m in enumerate(models_raw):
        models.append(_model_entry(ctx, m, f"models[{i}]", models, defaults, datasets, sources))
        models[-1].seeds = _seeds(ctx, m, f"models[{i}].seeds", seeds, seed)
    _check_latent(ctx, models, datasets, sources)
    return Suite(name=name, path=path, seed=seed, device=device, datasets=datasets,
                 models=models, sources=sources, description=description)


@dataclass(frozen=True)
class _Defaults:
    """What every model entry inherits: ``[defaults]``, ``[evaluation]``, ``[timing]``."""

    budget: Budget
    batch_size: int
    train: dict
    evaluation: Evaluation
    timing: Timing


def _defaults(ctx: _Ctx, raw: dict) -> _Defaults:
    defaults = _table(ctx, raw, "defaults", "defaults")
    _unknown(ctx, defaults, _DEFAULTS, "defaults")
    d_budget_t = _table(ctx, defaults, "budget", "defaults.budget")
    _unknown(ctx, d_budget_t, BUDGET_KEYS, "defaults.budget")
    d_flops = _positive(ctx, _get(ctx, d_budget_t, "flops", (int, float),
                                  "defaults.budget.flops"), "defaults.budget.flops")
    d_budget = Budget(
        _positive(ctx, _get(ctx, d_budget_t, "steps", int, "defaults.budget.steps"),
                  "defaults.budget.steps"),
        _positive(ctx, _get(ctx, d_budget_t, "seconds", (int, float),
                            "defaults.budget.seconds"), "defaults.budget.seconds"),
        None if d_flops is None else float(d_flops),
    )
    d_batch = _positive(ctx, _get(ctx, defaults, "batch_size", int, "defaults.batch_size", 64),
                        "defaults.batch_size")
    d_train = _train_options(ctx, _table(ctx, defaults, "train", "defaults.train"),
                             "defaults.train")
    evaluation = _dataclass_from(ctx, Evaluation, _table(ctx, raw, "evaluation", "evaluation"),
                                 "evaluation")
    _check_evaluation(ctx, evaluation, "evaluation")
    timing = _dataclass_from(ctx, Timing, _table(ctx, raw, "timing", "timing"), "timing")
    _check_timing(ctx, timing, "timing")
    return _Defaults(d_budget, d_batch, d_train, evaluation, timing)


def _model_entry(ctx: _Ctx, m, where: str, models: list[ModelEntry], defaults: _Defaults,
                 datasets: list[str], sources: dict) -> ModelEntry:
    """One ``[[models]]`` table as an entry, checked (a latent one by ``_check_latent``,
    once its autoencoder is known); ``models`` are the entries before it."""
    from .. import registry

    if not isinstance(m, dict):
        raise ctx.error(where, "must be a table ([[models]])")
    _unknown(ctx, m, _MODEL, where)
    mname = _get(ctx, m, "name", str, f"{where}.name")
    if mname is None:
        raise ctx.error(f"{where}.name", "missing: the registered model name")
    if mname not in registry.available():
        raise ctx.error(f"{where}.name", f"unknown model {mname!r}; available: "
                        f"{', '.join(registry.available())}")
    mid = _folder_name(ctx, _get(ctx, m, "id", str, f"{where}.id", mname), f"{where}.id")
    if any(e.id == mid for e in models):
        raise ctx.error(f"{where}.id", f"model {mid!r} appears twice; give one an id")
    budget = _budget(ctx, _table(ctx, m, "budget", f"{where}.budget"), f"{where}.budget",
                     defaults.budget)
    batch = _positive(ctx, _get(ctx, m, "batch_size", int, f"{where}.batch_size",
                                defaults.batch_size), f"{where}.batch_size")
    train = {**defaults.train, **_train_options(ctx, _table(ctx, m, "train", f"{where}.train"),
                                                f"{where}.train")}
    ev = _dataclass_from(ctx, Evaluation, _table(ctx, m, "evaluation", f"{where}.evaluation"),
                         f"{where}.evaluation", defaults.evaluation)
    _check_evaluation(ctx, ev, f"{where}.evaluation")
    tm = _dataclass_from(ctx, Timing, _table(ctx, m, "timing", f"{where}.timing"),
                         f"{where}.timing", defaults.timing)
    _check_timing(ctx, tm, f"{where}.timing")
    samplers = _get(ctx, m, "samplers", list, f"{where}.samplers", [{}])
    if not samplers:
        raise ctx.error(f"{where}.samplers", "give at least one variant (or leave it out)")
    variants = [_variant(ctx, s, f"{where}.samplers[{j}]", ev, tm)
                for j, s in enumerate(samplers)]
    entry = ModelEntry(
        name=mname, id=mid, family=registry.spec(mname).cls.family,
        config=_table(ctx, m, "config", f"{where}.config"), budget=budget,
        batch_size=batch, train=train, nll=_table(ctx, m, "nll", f"{where}.nll"),
        variants=variants, evaluation=ev, timing=tm,
        autoencoder=_get(ctx, m, "autoencoder", str, f"{where}.autoencoder"),
        datasets=_entry_datasets(ctx, m, datasets, where),
    )
    if entry.nll and registry.spec(mname).cls.likelihood is None:
        raise ctx.error(f"{where}.nll", f"{mname} defines no likelihood; drop the nll table")
    if not is_latent(mname):  # a latent model is built once its autoencoder is known
        _check_model(ctx, entry, [sources[d] for d in entry.datasets or datasets], where)
    return entry


def _datasets(ctx: _Ctx, raw: dict, path: Path) -> tuple[list[str], dict]:
    """The ``datasets`` list: built-in names, paths (``"./my_images"``, ``"data.npz?size=32"``)
    or tables (``{ path = "./my_images", size = 32 }``). A relative path is looked up from
    the current directory, then from the suite file's folder. Returns the labels (the
    built-in name, or the folder's / file's name) and label -> the parsed spec."""
    from ..data import DATASETS, spec

    items = _get(ctx, raw, "datasets", list, "datasets")
    if not items:
        raise ctx.error("datasets", "give a non-empty list of dataset names or paths")
    labels, sources = [], {}
    for i, item in enumerate(items):
        where = f"datasets[{i}]"
        if not isinstance(item, str | dict):
            raise ctx.error(where, f"a dataset is a name, a path or a table, got {item!r}")
        if isinstance(item, dict) and "path" in item:
            item = dict(item)
            item["path"] = str(_relative(Path(str(item["path"])), path))
        elif isinstance(item, str) and item.strip().lower() not in DATASETS:
            where_path, sep, query = item.partition("?")
            item = str(_relative(Path(where_path), path)) + sep + query
        try:
            s = spec(item)
        except ConfigError as e:
            raise ctx.error(where, str(e)) from None
        if not s.builtin and not Path(s.source).exists():
            raise ctx.error(where, f"unknown dataset {items[i]!r}; available: "
                            f"{', '.join(DATASETS)}, or a folder of images or a .npy/.npz "
                            "file (not found from the current directory nor the suite's)")
        label = s.name if not s.size else f"{s.name}-{s.options()['size']}"
        _folder_name(ctx, label, where)
        if label in sources:
            raise ctx.error("datasets", f"lists a dataset twice ({label})")
        labels.append(label)
        sources[label] = s
    return labels, sources


def _relative(p: Path, suite_path: Path) -> Path:
    p = p.expanduser()
    if p.is_absolute() or p.exists():
        return p
    beside = suite_path.parent / p
    return beside if beside.exists() else p


def as_dict(obj: Any) -> Any:
    """A suite part as plain JSON data (for config hashes)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
