"""The results schema: one row per dataset x model x sampler variant, as written to
``results.jsonl`` (one JSON object per line) and flattened into ``results.csv``.

A figure that does not exist for a row (the NLL of a model without one, a metric not
asked for) is ``None`` in JSON and ``n/a`` in tables, never 0.

The quality columns, their directions and which of them are deterministic come from the
metric registry (``zoo.metrics.registry``), read when asked for: ``COLUMNS``,
``DIRECTION`` and ``DETERMINISTIC`` include a metric registered at run time.
"""

from __future__ import annotations

import json

from ..core import ZooError
from ..metrics import registry as metric_registry
from ..options import literal_value

QUALITY = "<quality>"  # where the registry's metric columns go in COLUMNS

# reconstruction figures of a model that reconstructs (an autoencoder, a latent model through
# its autoencoder; zoo.metrics.reconstruction, with the row's extractor), once per model
RECON_COLUMNS: tuple[str, ...] = (
    "recon_n",  # reference-split images reconstructed
    "recon_psnr", "recon_psnr_ci95",  # dB, mean over the images, 95% t interval
    "recon_fid", "recon_fid_ci95",  # FID of the reconstructions against the split
    "codebook_perplexity", "dead_codes", "codebook_size",  # a VQ-VAE's codebook use
)
# a latent model's first stage: the suite's autoencoder entry (id), its parameters, and the
# compute of its training (beside the second stage's own train_flops and train_seconds)
AUTOENCODER_COLUMNS: tuple[str, ...] = (
    "autoencoder", "autoencoder_params", "autoencoder_train_flops", "autoencoder_train_seconds",
)

# every row carries every column, in this order
_COLUMNS: tuple[str, ...] = (
    # identity
    "suite", "dataset", "model", "family", "sampler",
    "sampler_options",  # {option: value}: the sampler's canonical options, defaults filled in
    "network_calls",  # network evaluations per image of that sampler (where it counts them)
    # the model and its training
    "params", "config_hash",
    # with a suite's seeds = K > 1: the training seed of a run's row (None: the aggregate
    # over the seeds, or a suite of one seed) and the aggregate's number of seeds
    "train_seed", "train_seeds",
    "train_steps", "train_seconds", "train_images_per_s",
    "train_first_step_s",  # the first step alone: compilation (train.compile) and warm-up
    # model FLOPs per image (counted) and the fraction of the device's matmul peak achieved
    "train_flops_per_image", "train_mfu", "sample_flops_per_image", "sample_mfu",
    "train_flops",  # the training's total: train_steps x batch size x train_flops_per_image
    # sample quality (through zoo.metrics.evaluate: the registry's columns) and likelihood
    QUALITY,
    "extractor", "extractor_hash", "ref_split", "n_samples", "n_reference",
    "nll_bpd", "nll_stderr", "nll_kind", "nll_detail", "nll_images",
    *RECON_COLUMNS, *AUTOENCODER_COLUMNS,
    # speed and memory
    "sample_images_per_s",  # {batch size (str): images/s}
    "latency_ms_p50", "latency_ms_p95",  # {batch size (str): ms per sampling call}
    "latency_batch_size",
    "max_batch_size",  # timing.max_batch on CUDA: the largest batch that fit in memory
    "peak_mem_mb", "memory_kind",  # "cuda max_memory_allocated" or "cpu peak rss"
    # where it ran
    "device", "device_peak_tflops", "device_peak_dtype", "world_size", "dtype", "versions",
    "commit", "seed", "grid",
    "replicates",  # the bootstrap draws behind the intervals, {column: [B]} (a JSON path)
    "memorization_panel",  # with the memorization metric: its closest pairs (a PNG path)
    "timestamp",
)

# the type of a column in a table of rows (zoo.bench.results, results.csv); a metric column
# is a number; a column named in neither (a sampler option, an extra key) takes its values'
_TEXT = ("suite", "dataset", "model", "family", "sampler", "config_hash", "extractor",
         "extractor_hash", "ref_split", "nll_kind", "nll_detail", "memory_kind", "device",
         "device_peak_dtype", "dtype", "commit", "grid", "memorization_panel", "timestamp",
         "autoencoder", "replicates")
_INTEGER = ("params", "network_calls", "train_steps", "train_flops_per_image",
            "sample_flops_per_image", "n_samples", "n_reference", "nll_images",
            "latency_batch_size", "max_batch_size", "world_size", "seed", "recon_n",
            "dead_codes", "codebook_size", "autoencoder_params", "train_seed",
            "train_seeds")


def column_kind(column: str) -> str | None:
    """"str", "int" or "float" for a column of the schema (``versions.KEY`` is text,
    ``COLUMN@BATCH`` of a per-batch column a number), None for one it does not type."""
    base = column.split("@")[0] if "@" in column else column
    if column in _TEXT or column.startswith("versions."):
        return "str"
    if column in _INTEGER:
        return "int"
    if column.endswith((INTERVAL + ".lo", INTERVAL + ".hi")):
        return "float"
    if column.endswith(INTERVAL):
        return None
    if base in columns() and base not in _TEXT and base not in ("sampler_options", "versions"):
        return "float"
    return None


# a row's identity: two runs' rows with the same key are the same measurement
KEY: tuple[str, ...] = ("suite", "dataset", "model", "sampler", "sampler_options",
                        "train_seed")
# rows written before sampler options were typed held these instead of sampler_options
LEGACY_OPTION_COLUMNS = ("steps", "eta", "temperature")

# the direction of each comparable figure (zoo compare): +1 higher is better, -1 lower is;
# the metrics' own come first in each group
_LOWER_IS_BETTER = ("nll_bpd", "latency_ms_p50", "latency_ms_p95", "peak_mem_mb",
                    "recon_fid", "dead_codes")
_HIGHER_IS_BETTER = ("sample_images_per_s", "train_images_per_s", "train_mfu", "sample_mfu",
                     "recon_psnr", "codebook_perplexity")

# figures that are identical for identical code, seed and machine (safe to gate on in CI);
# timings and memory vary with the machine's load and are reported, not gated, by default.
# dead_codes is deterministic too but not gated by default: a count whose tolerable change
# depends on the codebook's size (codebook_perplexity gates the codebook's use)
_DETERMINISTIC = ("nll_bpd", "recon_psnr", "recon_fid", "codebook_perplexity")


INTERVAL = "_ci95"  # suffix of a figure's 95% interval column: [lo, hi]


def quality_columns() -> tuple[str, ...]:
    """The registry's metric columns, each interval column followed by its ``<key>_ci95``."""
    return tuple(k for c in metric_registry.columns()
                 for k in ((c.key, c.key + INTERVAL) if c.interval else (c.key,)))


def interval_of(column: str) -> str | None:
    """The ``<key>_ci95`` column of a figure that has one in the schema, else None."""
    key = column + INTERVAL
    return key if key in quality_columns() or key in RECON_COLUMNS else None


def columns() -> tuple[str, ...]:
    """Every column of a row, in order: the registry's metric columns in the quality block."""
    quality = quality_columns()
    clash = set(quality) & set(_COLUMNS)
    if clash:
        raise ValueError(f"metric columns {sorted(clash)} clash with the results schema's")
    i = _COLUMNS.index(QUALITY)
    return _COLUMNS[:i] + quality + _COLUMNS[i + 1:]


def directions() -> dict[str, int]:
    """{figure: +1 higher is better / -1 lower is better} of every comparable figure."""
    metric = metric_registry.directions()
    return {**{k: -1 for k, d in metric.items() if d < 0}, **{k: -1 for k in _LOWER_IS_BETTER},
            **{k: +1 for k, d in metric.items() if d > 0}, **{k: +1 for k in _HIGHER_IS_BETTER}}


def deterministic() -> tuple[str, ...]:
    """The figures gated in CI by default: the registry's deterministic ones, and NLL."""
    return metric_registry.deterministic_columns() + _DETERMINISTIC


def __getattr__(name: str):
    # module constants computed on access, so a metric registered later is included
    if name == "COLUMNS":
        return columns()
    if name == "DIRECTION":
        return directions()
    if name == "DETERMINISTIC":
        return deterministic()
    if name == "LOWER_IS_BETTER":
        return tuple(k for k, d in directions().items() if d < 0)
    if name == "HIGHER_IS_BETTER":
        return tuple(k for k, d in directions().items() if d > 0)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# nll_kind values
NLL_KINDS = ("exact", "bound", "none")


def row_key(row: dict) -> tuple:
    row = upgrade(row)
    return tuple(json.dumps(row.get(k), sort_keys=True) if k == "sampler_options"
                 else row.get(k) for k in KEY)


def upgrade(row: dict) -> dict:
    """A row in today's schema. A row written before sampler options were typed names its
    sampler as ``name(option=value,...)`` beside the option columns of
    ``LEGACY_OPTION_COLUMNS``; its ``sampler`` becomes the name and ``sampler_options``
    the options that sampler's declaration makes of them (defaults filled in), so results
    files of either age join under ``zoo compare``."""
    if row.get("sampler_options") is not None or "sampler" not in row:
        return row
    name, _, rest = str(row.get("sampler") or "default").partition("(")
    raw = dict(item.split("=", 1) for item in rest.rstrip(")").split(",") if "=" in item)
    raw = {k: literal_value(v) for k, v in raw.items()}
    raw.update({k: row[k] for k in LEGACY_OPTION_COLUMNS if row.get(k) is not None})
    return {**row, "sampler": name, "sampler_options": canonical_options(row.get("family"),
                                                                          name, raw)}


def canonical_options(family, name: str, raw: dict) -> dict:
    """``raw`` options of sampler ``name`` of ``family`` with its defaults filled in (as
    given when the family no longer declares that sampler)."""
    from ..registry import sampler_class

    cls = sampler_class(family, name)
    if cls is None:
        return raw
    try:
        return cls.parse(raw).canonical()
    except ZooError:
        return raw


def sampler_label(row: dict) -> str:
    """A row's sampler as its declaration labels it (``SamplerOptions.label``), or the name
    and options when the family no longer declares that sampler."""
    from ..registry import sampler_class

    name = str(row.get("sampler") or "default")
    options = row.get("sampler_options") if isinstance(row.get("sampler_options"), dict) else {}
    cls = sampler_class(row.get("family"), name)
    if cls is not None:
        try:
            return cls.parse(options).label()
        except ZooError:
            pass
    return ", ".join([name, *(f"{k} {v}" for k, v in options.items())])


def sampler_marker(row: dict) -> str:
    """The matplotlib marker a row's sampler declares ("^" when none)."""
    from ..registry import sampler_class

    cls = sampler_class(row.get("family"), str(row.get("sampler") or "default"))
    return cls.marker if cls is not None else "^"


def family_color(family) -> str:
    """The colour a family declares for figures (grey when none)."""
    from ..registry import families

    cls = families().get(str(family))
    return cls.color if cls is not None else "#7f7f7f"
