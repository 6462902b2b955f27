"""The benchmark runner: train, evaluate, time; one row per dataset x model x sampler.

Layout of an output directory::

    results.jsonl               one row per line (zoo.bench.schema.COLUMNS), appended and
                                fsynced as each row finishes
    curve.jsonl                 with ``evaluation.curve``: each model's quality at fractions
                                of its training budget (``Curve``), one line per point
    suite.toml                  a copy of the suite that was run
    runs/<dataset>/<model>/     the Trainer's run directory, plus bench.json (config hash,
                                finished or not, the training summary)
    grids/<dataset>/<model>/<sampler>.png
    replicates/<dataset>/<model>/<sampler>.json
                                the bootstrap draws behind the row's intervals (its
                                ``replicates`` column; ``zoo.bench.seeds`` combines them)

A model with ``seeds = K`` > 1 trains K runs (``<model>@seed<S>`` in runs/, grids/ and
replicates/), each measured with the suite's seed (the same sampling noise, common random
numbers) into a row of its ``train_seed``; once all are measured, their aggregate row
(``train_seed`` None, ``train_seeds`` K: the mean and the combined interval of
``zoo.bench.seeds.aggregate``) follows them.

Restarting the same command skips every row already in results.jsonl; a model whose
finished run has the same config hash is loaded rather than retrained, and a run that was
interrupted is resumed from its checkpoint.

A latent model's entry names its autoencoder entry (``autoencoder = "ID"``): that entry is
trained (or reused) first, once per dataset, and its run directory is the latent model's
``autoencoder`` option; the autoencoder's weights hash is part of the latent model's config
hash. Models that reconstruct get reconstruction figures (``measure_reconstruction``), a
latent model the id and training compute of its autoencoder (``first_stage``).

Under torchrun (``torchrun --nproc_per_node=N -m zoo bench SUITE --out DIR``) every rank
runs the suite together: training is the Trainer's DDP, samples are drawn in slices shared
out over the ranks (``zoo.metrics.draw_samples``) and the metrics computed once, the NLL
images are shared out by batch, and rank 0 alone writes DIR. Each batch and slice has its
own seed, so the figures do not depend on the number of processes (training up to float
rounding). Timings are measured on every rank at once and rank 0's are reported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import data as zdata
from .. import distributed as zdist
from .. import registry
from ..core import Batch, CheckpointError, ConfigError, GenerativeModel, atomic_write
from ..files import open_append
from ..images import legible_scale, save_grid
from ..locks import exclusive
from ..progress import Progress
from ..readers import read_json
from ..runs import CHECKPOINT_FILE, MODEL_FILE, check_folder, load_run
from ..train import Trainer, resolve_device
from . import schema, timing
from .rows import check_point, check_row, read_jsonl
from .schema import columns, row_key
from .suite import ModelEntry, Suite, Variant, load_suite

RESULTS_FILE = "results.jsonl"
CURVE_FILE = "curve.jsonl"  # quality along the way: one line per (row key, fraction)
MARKER_FILE = "bench.json"
CHECKPOINT_EVERY = 250  # default of the runner's Trainer (train.checkpoint_every overrides)

Hook = Callable[..., None]


# -- results.jsonl -----------------------------------------------------------------------------
def read_rows(path: str | Path) -> list[dict]:
    """The rows of a results.jsonl (or the points of a curve.jsonl) to resume from, each
    checked (``rows.check_row``): [] when there is none yet; a last line cut short by a kill
    is dropped; a damaged or poisoned line is a ConfigError naming the file, line and key."""
    path = Path(path)
    if not path.is_file():
        return []
    return read_jsonl(path, check_point if path.name == CURVE_FILE else check_row,
                      partial_tail=[])


def _repair_tail(path: Path) -> None:
    """Cut a partial last line (the process was killed mid-write) so appends stay valid."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data[: data.rfind(b"\n") + 1]))


def append_row(path: Path, row: dict) -> None:
    """Append one row as a JSON line, flushed and fsynced before returning."""
    line = json.dumps(row, allow_nan=False) + "\n"
    with open_append(path) as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _clean(value):
    """JSON-safe: non-finite floats become None (n/a), tensors and numpy scalars plain."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _inside(out: Path, path: Path) -> Path:
    """``path`` when it lies under ``out``; a ConfigError otherwise. Suites refuse ids and
    labels that could climb out (``zoo.bench.suite``); this checks every path the runner
    writes again. Lexical (``..`` and absolute parts), so an ``out/runs`` that the user made
    a symbolic link to another disk still works."""
    base, target = os.path.abspath(out), os.path.abspath(path)
    if os.path.commonpath([base, target]) != base or target == base:
        raise ConfigError(f"refusing to write {path}: it lies outside the output directory "
                          f"{out} (a model id or dataset label of the suite climbs out)")
    return path


def _read_marker(path: Path) -> dict:
    """A run's bench.json ({} when there is none); a damaged one is a CheckpointError."""
    if not path.is_file():
        return {}
    try:
        marker = read_json(path, "marker")
    except ConfigError:
        marker = None
    if not isinstance(marker, dict) or (marker.get("finished")
                                        and not isinstance(marker.get("summary"), dict)):
        raise CheckpointError(f"{path} is damaged (not the JSON object zoo writes); delete "
                              f"{path.parent} to train that model again")
    return marker


# -- training ----------------------------------------------------------------------------------
def config_hash(suite: Suite, entry: ModelEntry, dataset: str, device: str,
                autoencoder_sha256: str | None = None, seed: int | None = None) -> str:
    """What decides the trained weights: model, overrides, dataset, budget, options, seed
    and the device type (a CPU run is not reused on a GPU); the curve's fractions, whose
    points can only be measured while training passes them; and a latent model's
    autoencoder weights (``autoencoder_sha256``), so a retrained autoencoder retrains it.
    ``seed``: the training seed (default the suite's)."""
    blob = json.dumps({
        "model": entry.name, "config": entry.config, "dataset": suite.source(dataset),
        "device": device, "world_size": zdist.world_size(),
        "budget": {"steps": entry.budget.steps, "seconds": entry.budget.seconds},
        "batch_size": entry.batch_size, "train": entry.train,
        "seed": suite.seed if seed is None else seed,
        **({"flops": entry.budget.flops} if entry.budget.flops is not None else {}),
        **({"curve": list(entry.evaluation.curve)} if entry.evaluation.curve else {}),
        **({"autoencoder_sha256": autoencoder_sha256} if autoencoder_sha256 else {}),
    }, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def budget_steps(entry: ModelEntry, flops_per_image: float | None) -> int | None:
    """The step budget: the suite's steps, or the steps whose images cost its training
    FLOPs (``ceil(flops / (flops_per_image x batch_size))``), whichever is fewer."""
    b = entry.budget
    if b.flops is None:
        return b.steps
    if not flops_per_image:
        raise ConfigError(f"{entry.id}: a FLOPs budget needs the model's training FLOPs, "
                          "which could not be counted; give steps or seconds instead")
    steps = max(1, math.ceil(b.flops / (flops_per_image * entry.batch_size)))
    return steps if b.steps is None else min(steps, b.steps)


def stages(entry: ModelEntry, steps: int | None) -> list[tuple[float, dict]]:
    """(fraction, Trainer budget) of each stage: one per curve fraction, the whole budget
    last. A stage's steps are the fraction of the step budget (rounded up), its seconds
    the fraction of the time budget; the Trainer resumes from one stage to the next."""
    fractions = sorted(set(entry.evaluation.curve) | {1.0})
    seconds = entry.budget.seconds
    return [(f, {"steps": None if steps is None else max(1, math.ceil(f * steps - 1e-9)),
                 "seconds": None if seconds is None else f * seconds}) for f in fractions]


def train_model(
    suite: Suite, entry: ModelEntry, dataset: str, run_dir: Path, device: torch.device,
    data_root: str | None = None, hook: Hook | None = None,
    flops_per_image: float | None = None, curve: Curve | None = None,
    config: dict | None = None, autoencoder_sha256: str | None = None,
    seed: int | None = None,
) -> tuple[GenerativeModel, dict, str]:
    """The trained model (EMA weights, eval mode) on ``device``, its training summary and
    config hash: reused when ``run_dir`` holds a finished run of the same hash, resumed when
    it holds an unfinished one, trained from scratch otherwise. Training runs in
    ``stages``; after each, ``curve`` measures the model there (when its point is missing).
    ``config``: the model's options (default: the entry's; a latent model's add its
    autoencoder run), ``autoencoder_sha256``: that autoencoder's weights (in the hash);
    ``seed``: the training seed (default the suite's)."""
    config = entry.config if config is None else config
    seed = suite.seed if seed is None else seed
    h = config_hash(suite, entry, dataset, device.type, autoencoder_sha256, seed)
    marker_path = run_dir / MARKER_FILE
    marker = _read_marker(marker_path)
    same = marker.get("config_hash") == h
    if same and marker.get("finished") and (run_dir / MODEL_FILE).is_file():
        return load_run(run_dir, map_location=device).eval(), marker["summary"], h
    main = zdist.is_main()
    text = json.dumps({"config_hash": h, "finished": False, "model": entry.name,
                       "id": entry.id, "dataset": dataset, "config": config}, indent=2)
    todo = stages(entry, budget_steps(entry, flops_per_image))
    announced = False
    for i, (fraction, budget) in enumerate(todo):
        last = i == len(todo) - 1
        if not last and (curve is None or not curve.missing(fraction)):
            continue  # measured already: the next stage resumes past it
        resume = same and (run_dir / CHECKPOINT_FILE).is_file()
        trainer = _stage_trainer(suite, entry, dataset, run_dir, data_root, config,
                                 {**budget, "device": str(device), "seed": seed}, resume)
        if main and not same:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(marker_path, lambda tmp: Path(tmp).write_text(text))
        same = True
        if hook is not None and not announced:
            hook("resume" if resume else "train", dataset=dataset, model=entry.id, seed=seed)
        announced = True
        fit = trainer.fit()
        summary = {k: fit[k] for k in SUMMARY_KEYS}
        if not last:
            zdist.barrier()  # rank 0 has written model.pt
            curve.measure(load_run(run_dir, map_location=device).eval(), fraction, summary)
    text = json.dumps({**json.loads(text), "finished": True, "summary": summary}, indent=2)
    if main:
        atomic_write(marker_path, lambda tmp: Path(tmp).write_text(text))
    zdist.barrier()  # rank 0 has written model.pt
    return load_run(run_dir, map_location=device).eval(), summary, h


#: what bench.json and the rows keep of a Trainer's summary
SUMMARY_KEYS = ("steps", "seconds", "images_per_s", "first_step_seconds", "steady_images_per_s")


def _stage_trainer(suite: Suite, entry: ModelEntry, dataset: str, run_dir: Path,
                   data_root: str | None, config: dict, options: dict,
                   resume: bool) -> Trainer:
    """The Trainer of one stage: resuming ``run_dir``'s checkpoint, or over a new model
    (``run_dir`` of another configuration cleared first); ``options["seed"]``: its
    training seed."""
    if resume:  # its seed is the checkpoint's
        return Trainer.resume(run_dir, progress=None, data_root=data_root,
                              **{k: v for k, v in options.items() if k != "seed"})
    if run_dir.exists() and zdist.is_main():
        shutil.rmtree(run_dir)  # another configuration's run, or one that never saved
    zdist.barrier()
    torch.manual_seed(options["seed"])
    model = registry.create(entry.name, dataset=suite.spec(dataset), **config)
    # no end-of-training grid by default: the harness draws its own per sampler
    train = {"checkpoint_every": CHECKPOINT_EVERY, "sample_n": 0, **entry.train}
    return Trainer(model, suite.spec(dataset), run_dir, progress=None, data_root=data_root,
                   batch_size=entry.batch_size, **options, **train)


class Curve:
    """Quality along the way of one model on one dataset: each point (a fraction of the
    budget) measured once into ``curve.jsonl``, skipped when that file has it."""

    def __init__(self, path: Path, suite: Suite, entry: ModelEntry, dataset: str,
                 flops_per_image: float | None, data_root: str | None, done: set,
                 hook: Hook | None = None, train_seed: int | None = None):
        self.path, self.suite, self.entry, self.dataset = path, suite, entry, dataset
        self.flops_per_image, self.data_root, self.done = flops_per_image, data_root, done
        self.hook, self.train_seed = hook, train_seed  # train_seed: the rows' column

    def key(self, fraction: float) -> tuple:
        v = self.entry.variants[0]
        return curve_key({"suite": self.suite.name, "dataset": self.dataset,
                          "model": self.entry.id, "sampler": v.name,
                          "sampler_options": v.canonical, "fraction": fraction,
                          "train_seed": self.train_seed})

    def missing(self, fraction: float) -> bool:
        return bool(self.entry.evaluation.curve) and self.key(fraction) not in self.done

    def measure(self, model: GenerativeModel, fraction: float, summary: dict) -> None:
        """Measure the model after ``summary``'s training at ``fraction`` of the budget:
        the curve metrics (with intervals) of ``curve_n_samples`` samples of the model's
        first sampler variant, and the NLL of ``curve_nll_images`` reference images."""
        from .. import metrics

        if not self.missing(fraction):
            return
        entry, ev, seed = self.entry, self.entry.evaluation, self.suite.seed
        v = entry.variants[0]
        spec = self.suite.spec(self.dataset)
        samples, labels = draw(model, ev.curve_n_samples, ev.batch_size, seed, v.options)
        result = metrics.evaluate(
            samples, spec, ev.ref_split, ev.extractor,
            metrics=metrics_for(ev.curve_metrics, labels),
            batch_size=ev.batch_size, seed=seed, device=model.device,
            n_reference=ev.n_reference, root=self.data_root, announce=False,
            bootstrap=ev.bootstrap, labels=labels,
        )
        nll = measure_nll(model, spec, entry, seed, self.data_root, ev.curve_nll_images)
        images = summary["steps"] * entry.batch_size
        quality = schema.quality_columns()
        keep = [k for k in metrics.registry.column_keys(ev.curve_metrics)]
        keep += [k + schema.INTERVAL for k in keep if k + schema.INTERVAL in quality]
        row = {
            "suite": self.suite.name, "dataset": self.dataset, "model": entry.id,
            "family": model.family, "sampler": v.name, "sampler_options": v.canonical,
            "train_seed": self.train_seed, "fraction": fraction,
            "train_steps": summary["steps"], "train_images": images,
            "train_flops": None if not self.flops_per_image else images * self.flops_per_image,
            "train_seconds": summary["seconds"], "budget": entry.budget.as_dict(),
            "n_samples": result["n_generated"], "extractor": result["extractor"],
            "ref_split": result["split"],
            **{k: result.get(k) for k in keep},
            **{k: nll[k] for k in ("nll_bpd", "nll_stderr", "nll_kind", "nll_images")},
        }
        row = _clean(row)
        if zdist.is_main():
            append_row(self.path, row)
        self.done.add(self.key(fraction))
        if self.hook is not None:
            self.hook("curve", dataset=self.dataset, model=self.entry.id, fraction=fraction)


def curve_key(row: dict) -> tuple:
    """A curve point's identity: its row's key and the fraction of the budget."""
    return (*row_key(row), round(float(row["fraction"]), 9))


# -- measuring -----------------------------------------------------------------------------------
def measure_nll(model: GenerativeModel, dataset: str, entry: ModelEntry, seed: int,
                data_root: str | None = None, n_images: int | None = None) -> dict:
    """NLL in bits/dim on the first ``n_images`` (default ``nll_images``) images of the
    reference split: mean and
    standard error over the images (for a Monte Carlo bound, such as an importance-weighted
    one or one of sampled terms, its noise is part of that spread); kind is the model's
    ``likelihood`` (exact or bound) and detail says how it was computed
    (``describe_nll``); all None for a model without one."""
    ev = entry.evaluation
    n_images = ev.nll_images if n_images is None else n_images
    if model.likelihood is None or n_images == 0:
        return {"nll_bpd": None, "nll_stderr": None, "nll_kind": "none", "nll_detail": None,
                "nll_images": None}
    images, _ = zdata.load(dataset, ev.ref_split, root=data_root)
    images = images[:n_images]
    b = ev.nll_batch_size
    batches = zdist.my_share(-(-images.shape[0] // b))
    values = {}
    with torch.no_grad():
        for i in batches:  # this rank's batches; each seeds its own importance samples
            torch.manual_seed(zdist.mix_seed(seed, i))
            values[i] = model.nll(images[i * b:(i + 1) * b], **entry.nll).double().cpu()
    values = zdist.gather_dict(values)
    nll = torch.cat([values[i] for i in sorted(values)])
    n = nll.numel()
    return {
        "nll_bpd": nll.mean().item(),
        "nll_stderr": nll.std().item() / math.sqrt(n) if n > 1 else None,
        "nll_kind": model.likelihood,
        "nll_detail": model.describe_nll(**entry.nll),
        "nll_images": n,
    }


def draw(model: GenerativeModel, n: int, batch_size: int, seed: int, options: dict):
    """(n samples, the labels asked for): a conditional model is asked for every class in
    turn (``metrics.balanced_labels``), an unconditional one for none (labels None)."""
    from .. import metrics

    gen = torch.Generator(device=model.device).manual_seed(seed)
    if not model.conditional:
        return metrics.draw_samples(model, n, batch_size, generator=gen, **options), None
    labels = metrics.balanced_labels(n, model.num_classes)
    return metrics.draw_labelled(model, labels, batch_size, seed=seed, generator=gen,
                                 **options), labels


def metrics_for(names, labels):
    """The suite's metrics ``names`` that apply to samples drawn with ``labels``: without
    labels (an unconditional model) the ones that need the requested class are left out,
    so one suite measures conditional and unconditional models alike (n/a in the table)."""
    from ..metrics import registry

    if labels is not None:
        return names
    skip = set(registry.label_metrics(names))
    return [m for m in registry.normalize_metrics(names) if m not in skip]


def measure_variant(
    model: GenerativeModel, dataset: str, entry: ModelEntry, variant: Variant, seed: int,
    grid_path: Path, data_root: str | None = None, announce: bool = True,
    stage: Callable[[str], None] = lambda text: None,
) -> dict:
    """Sample quality, a sample grid and sampling speed of one sampler variant; ``stage``
    is told each step (sample, eval, time) as it starts."""
    from .. import metrics

    ev, tm = entry.evaluation, variant.timing or entry.timing
    n = variant.n_samples or ev.n_samples
    stage("sample")
    # counted first: on CUDA a later call of the same shape may replay a CUDA graph, which
    # the counter cannot see into
    flops = timing.sample_flops_per_image(model, seed, **variant.options)
    samples, labels = draw(model, n, ev.batch_size, seed, variant.options)
    stage("eval")
    # a metric that finds the samples nearest a training image draws them beside it
    memo = bool(metrics.registry.closest_metrics(ev.metrics))
    panel = grid_path.with_name(grid_path.stem + "-memorization.png")
    result = metrics.evaluate(
        samples, dataset, ev.ref_split, ev.extractor, metrics=metrics_for(ev.metrics, labels),
        batch_size=ev.batch_size, seed=seed, device=model.device, n_reference=ev.n_reference,
        root=data_root, announce=announce,
        bootstrap=ev.bootstrap, panel=panel if memo and zdist.is_main() else None,
        labels=labels, replicates=True,
    )
    grid = None
    if ev.grid_images:
        if zdist.is_main():
            shown = samples[: ev.grid_images]  # enlarged as zoo sample draws them
            save_grid(shown, grid_path, scale=legible_scale(*shown.shape[2:], len(shown)))
        grid = grid_path
    stage("time")
    speed = timing.sampling_speed(model, tm.batch_sizes, tm.repeats, tm.warmup, seed,
                                  tm.max_batch, tm.max_batch_limit, **variant.options)
    latency_bs = tm.latency_batch_size or max(tm.batch_sizes)
    fastest = max(speed["sample_images_per_s"].values(), default=None)
    return {
        **{k: result.get(k) for k in schema.quality_columns()},  # None: not asked
        "extractor": result["extractor"],
        "extractor_hash": result["extractor_weights_sha256"],
        "ref_split": result["split"],
        "n_samples": result["n_generated"],
        "n_reference": result["n_reference"],
        "sample_images_per_s": speed["sample_images_per_s"],
        "sample_flops_per_image": flops,
        "sample_mfu": timing.mfu(flops, fastest, model.device),
        "latency_ms_p50": speed["latency_ms_p50"],
        "latency_ms_p95": speed["latency_ms_p95"],
        "latency_batch_size": latency_bs,
        "max_batch_size": speed["max_batch_size"],
        "peak_mem_mb": speed["peak_mem_mb"],
        "memory_kind": speed["memory_kind"],
        "grid": grid,
        # the samples closest to a training image beside it (zoo.metrics.memorization)
        "memorization_panel": panel if result.get("memorization_panel") else None,
        # the bootstrap draws behind the intervals (the row's replicates sidecar)
        "bootstrap_replicates": result.get("bootstrap_replicates") or None,
    }


# -- the two stages of a latent model ------------------------------------------------------------
@dataclass
class Trained:
    """One entry's trained model on one dataset, and what its rows say of its training."""

    entry: ModelEntry
    run_dir: Path
    model: GenerativeModel | None  # None once its rows are measured (memory)
    summary: dict
    config_hash: str
    flops: float | None  # training FLOPs per image
    curve: Curve
    autoencoder: Trained | None = None  # the autoencoder entry a latent model works over

    @property
    def train_flops(self) -> float | None:
        return self.summary["steps"] * self.entry.batch_size * self.flops if self.flops else None


def run_name(suite: Suite, entry: ModelEntry, seed: int) -> str:
    """The folder of ``entry`` trained with ``seed`` (its runs, grids, replicates): its id,
    ``ID@seedS`` when the entry trains several seeds or ``seed`` is not the suite's."""
    return entry.id if entry.seeds == 1 and seed == suite.seed else f"{entry.id}@seed{seed}"


def row_seed(entry: ModelEntry, seed: int) -> int | None:
    """The ``train_seed`` column of ``entry``'s rows of ``seed``: None for one seed."""
    return None if entry.seeds == 1 else seed


def _trained(suite: Suite, entry: ModelEntry, dataset: str, out: Path, dev: torch.device,
             data_root: str | None, hook: Hook | None, curve_done: set,
             trained: dict[tuple, Trained], flop_batch: Callable[[], Batch],
             seed: int) -> Trained:
    """``entry`` trained on ``dataset`` with training seed ``seed`` (``train_model``:
    reused, resumed or trained), once per run: ``trained`` remembers it by (id, seed). A
    latent entry's autoencoder entry comes first, with its own budget and the same seed,
    and its run directory is the latent model's ``autoencoder``."""
    if (entry.id, seed) in trained:
        return trained[(entry.id, seed)]
    config, ae = entry.config, None
    if entry.autoencoder is not None:
        ae = _trained(suite, suite.entry(entry.autoencoder), dataset, out, dev, data_root,
                      hook, curve_done, trained, flop_batch, seed)
        config = {**entry.config, "autoencoder": str(ae.run_dir)}
    run_dir = _inside(out, out / "runs" / dataset / run_name(suite, entry, seed))
    b = entry.batch_size
    batch = Batch(flop_batch().images[:b], flop_batch().labels[:b])
    # counted on a fresh model before training: a FLOPs budget needs it first
    fresh = registry.create(entry.name, dataset=suite.spec(dataset), **config)
    sha = getattr(fresh.config, "autoencoder_sha256", None) or None
    flops = timing.train_flops_per_image(fresh.place(dev), batch)
    del fresh
    curve = Curve(out / CURVE_FILE, suite, entry, dataset, flops, data_root, curve_done, hook,
                  row_seed(entry, seed))
    model, summary, h = train_model(suite, entry, dataset, run_dir, dev, data_root, hook,
                                    flops, curve, config=config, autoencoder_sha256=sha,
                                    seed=seed)
    trained[(entry.id, seed)] = Trained(entry, run_dir, model, summary, h, flops, curve, ae)
    return trained[(entry.id, seed)]


def measure_reconstruction(model: GenerativeModel, dataset, entry: ModelEntry, seed: int,
                           data_root: str | None = None) -> dict:
    """The reconstruction columns of a model that ``reconstruct``s (an autoencoder, a
    latent model through its autoencoder): ``zoo.metrics.reconstruction.evaluate`` on the
    first ``recon_images`` (default ``n_samples``) images of the reference split, with the
    suite's extractor and bootstrap; all None for any other model."""
    from ..metrics import reconstruction

    if not reconstruction.reconstructs(model):
        return dict.fromkeys(schema.RECON_COLUMNS)
    ev = entry.evaluation
    result = reconstruction.evaluate(
        model, dataset, ev.ref_split, ev.extractor, ev.recon_images or ev.n_samples,
        batch_size=ev.batch_size, root=data_root, bootstrap=ev.bootstrap, seed=seed,
        device=model.device, n_reference=ev.n_reference)
    return {k: result.get(k) for k in schema.RECON_COLUMNS}


def first_stage(model: GenerativeModel, autoencoder: Trained | None) -> dict:
    """A latent model's autoencoder columns: the entry's id, parameters and training compute
    (FLOPs, seconds); all None for any other model. A latent model whose autoencoder is a
    run outside the suite has its parameters only."""
    out = dict.fromkeys(schema.AUTOENCODER_COLUMNS)
    ae_model = getattr(model, "autoencoder", None)
    if ae_model is None:
        return out
    out["autoencoder_params"] = ae_model.num_parameters()
    if autoencoder is None:
        out["autoencoder"] = str(model.config.autoencoder) or None
        return out
    out.update(autoencoder=autoencoder.entry.id, autoencoder_train_flops=autoencoder.train_flops,
               autoencoder_train_seconds=autoencoder.summary["seconds"])
    return out


# -- the suite -----------------------------------------------------------------------------------
def run_suite(
    suite_path: str | Path,
    out_dir: str | Path,
    *,
    device: str | None = None,
    only_model: str | None = None,
    only_dataset: str | None = None,
    data_root: str | None = None,
    progress: bool | None = None,
    hook: Hook | None = None,
) -> Path:
    """Run every row of a suite that ``out_dir/results.jsonl`` lacks; returns its path.

    ``hook(event, **info)`` (for tests) is called with ``"train"``/``"resume"`` before a
    model trains, ``"curve"`` after a curve point is written, ``"reconstruction"`` after a
    model's reconstruction figures are measured (once per model), ``"evaluate"`` before a
    row is measured and ``"row"`` after it is written.
    """
    suite = load_suite(suite_path)
    out = Path(out_dir)
    dev = resolve_device(device or suite.device)
    if only_model is not None and not any(only_model in (m.id, m.name) for m in suite.models):
        from ..core import ConfigError

        raise ConfigError(f"--only-model {only_model}: the suite has "
                          f"{', '.join(m.id for m in suite.models)}")
    if only_dataset is not None and only_dataset not in suite.datasets:
        from ..core import ConfigError

        raise ConfigError(f"--only-dataset {only_dataset}: the suite has "
                          f"{', '.join(suite.datasets)}")
    # one writer; its Trainers lock their run dirs
    with exclusive(check_folder(out, "bench output"), "bench output"):
        return _run_rows(suite, out, dev, only_model, only_dataset, data_root, progress, hook)


def _run_rows(suite: Suite, out: Path, dev: torch.device, only_model: str | None,
              only_dataset: str | None, data_root: str | None, progress: bool | None,
              hook: Hook | None) -> Path:
    """The rows of ``run_suite`` that ``out/results.jsonl`` lacks, under its lock."""
    done, curve_done = _open_out(suite, out)
    rows = list(suite.rows(only_model, only_dataset))
    run = _Rows(suite, out, dev, data_root, hook, done, curve_done)
    units = [(d, m, v, s) for d, m, v in rows for s in m.train_seeds(suite.seed)]
    initial = sum(not run.missing(*u) for u in units)
    for d, m, v, s in units:  # the entries with rows to measure, in the order they run
        if run.missing(d, m, v, s) and (d, m.id) not in run.entries:
            run.entries.append((d, m.id))
    ids = [m.id for m in suite.models]
    run.entries.sort(key=lambda e: (suite.datasets.index(e[0]), ids.index(e[1])))
    run.bar = Progress(f"bench {suite.name}", len(units), "row", enabled=progress,
                       initial=initial)
    try:
        for dataset in suite.datasets:
            _run_dataset(run, dataset, rows)
    finally:
        run.bar.close()
    return out / RESULTS_FILE


#: what a bench writes over in its output directory (besides results.jsonl and suite.toml,
#: which mark it as one): the report's files and the runs', grids' and figures' folders
_BENCH_WRITES = ("report.md", "report.html", "results.csv", CURVE_FILE, "runs", "grids",
                 "figures", "replicates")


def _check_new_out(out: Path) -> None:
    """Refuse to start a bench in a directory that is not one (no results.jsonl, no
    suite.toml) but holds files of the names a bench writes (a project's report.md, say),
    which it would replace. An empty or new directory is fine."""
    if (out / RESULTS_FILE).exists() or (out / "suite.toml").exists():
        return
    replaced = [n for n in _BENCH_WRITES if os.path.lexists(out / n)]
    if replaced:
        raise ConfigError(f"{out} is not a bench output ({RESULTS_FILE} is missing) but holds "
                          f"{', '.join(replaced)}, which zoo bench would replace; give an "
                          "empty or new directory (--out), or move those files away")


def _open_out(suite: Suite, out: Path) -> tuple[set, set]:
    """``out`` made ready (the suite copied in, a torn last line cut from its files); the
    keys of the rows and of the curve points it holds."""
    main = zdist.is_main()
    results = out / RESULTS_FILE
    if main:
        _check_new_out(out)
        out.mkdir(parents=True, exist_ok=True)
        if suite.path.resolve() != (out / "suite.toml").resolve():
            text = suite.path.read_bytes()
            atomic_write(out / "suite.toml", lambda tmp: Path(tmp).write_bytes(text))
        _repair_tail(results)
    zdist.barrier()
    done = {row_key(r) for r in read_rows(results)}
    if main:
        _repair_tail(out / CURVE_FILE)
    curve_done = {curve_key(r) for r in read_rows(out / CURVE_FILE)}
    return done, curve_done


@dataclass
class _Rows:
    """One ``_run_rows`` call: the suite, where its rows go, the keys done, the bar."""

    suite: Suite
    out: Path
    dev: torch.device
    data_root: str | None
    hook: Hook | None
    done: set
    curve_done: set
    bar: Progress | None = None
    announced: set[str] = field(default_factory=set)  # datasets whose extractor was named
    entries: list[tuple[str, str]] = field(default_factory=list)  # (dataset, id) to run

    def key(self, dataset: str, entry: ModelEntry, v: Variant,
            train_seed: int | None = None) -> tuple:
        return row_key({"suite": self.suite.name, "dataset": dataset, "model": entry.id,
                        "sampler": v.name, "sampler_options": v.canonical,
                        "train_seed": train_seed})

    def missing(self, dataset: str, entry: ModelEntry, v: Variant, seed: int) -> bool:
        """Whether the row of ``entry`` trained with ``seed`` is still to measure: neither
        it nor the aggregate over the entry's seeds is done."""
        return (self.key(dataset, entry, v, row_seed(entry, seed)) not in self.done
                and self.key(dataset, entry, v) not in self.done)

    def where(self, dataset: str, entry: ModelEntry) -> str:
        """``mnist/ddpm (entry 2 of 5)``: the entry and how far in the suite it is."""
        i = self.entries.index((dataset, entry.id)) + 1 if (dataset, entry.id) in \
            self.entries else 0
        return f"{dataset}/{entry.id} (entry {i} of {len(self.entries)})"

    def status(self, text: str) -> None:
        self.bar.stage(text)

    def event(self, name: str, **info) -> None:
        if self.hook is not None:
            self.hook(name, **info)


def _run_dataset(run: _Rows, dataset: str, rows: list) -> None:
    """The missing rows of every entry on ``dataset``, each entry trained once."""
    trained: dict[tuple, Trained] = {}  # (entry id, seed) -> its trained model, this dataset
    batches: list[Batch] = []

    def flop_batch() -> Batch:
        """A training batch to count FLOPs on, loaded when first needed."""
        if not batches:
            images, labels = zdata.load(run.suite.spec(dataset), "train", root=run.data_root)
            batches.append(Batch(images[:128].clone(), labels[:128].clone()
                                 if labels is not None else
                                 Batch.unlabelled(images[:128]).labels))
        return batches[0]

    for entry in run.suite.models:
        mine = [v for d, m, v in rows if d == dataset and m is entry]
        for seed in entry.train_seeds(run.suite.seed):
            todo = [v for v in mine if run.missing(dataset, entry, v, seed)]
            if todo:
                _run_entry(run, dataset, entry, todo, trained, flop_batch, seed)
        for v in mine:
            if entry.seeds > 1 and run.key(dataset, entry, v) not in run.done:
                _aggregate(run, dataset, entry, v)


def _aggregate(run: _Rows, dataset: str, entry: ModelEntry, v: Variant) -> None:
    """The aggregate row of variant ``v`` over the entry's training seeds (``seeds.
    aggregate``: the mean, the combined interval), from their rows and bootstrap draws,
    with its own draws beside it."""
    from . import seeds

    have = {row_key(r): r for r in read_rows(run.out / RESULTS_FILE)}
    rows = [have[run.key(dataset, entry, v, s)] for s in entry.train_seeds(run.suite.seed)]
    if zdist.is_main():
        row, draws = seeds.aggregate(rows, [seeds.row_replicates(r, run.out) for r in rows],
                                     run.suite.seed)
        rel = Path("replicates") / dataset / entry.id / f"{v.slug}.json"
        row["replicates"] = _write_replicates(run.out, rel, draws)
        row = _clean({k: row.get(k) for k in columns()})
        append_row(run.out / RESULTS_FILE, row)
    run.done.add(run.key(dataset, entry, v))
    run.event("aggregate", dataset=dataset, model=entry.id, sampler=v.name)


def _write_replicates(out: Path, rel: Path, draws: dict | None) -> str | None:
    """Bootstrap draws ``{column: [B]}`` written to ``out/rel`` (JSON); ``rel`` as the
    row's ``replicates`` column, None when there are none."""
    if not draws:
        return None
    path = _inside(out, out / rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({k: [float(x) for x in v] for k, v in draws.items()})
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return rel.as_posix()


def _run_entry(run: _Rows, dataset: str, entry: ModelEntry, todo: list[Variant],
               trained: dict[tuple, Trained], flop_batch: Callable[[], Batch],
               seed: int) -> None:
    """One entry's rows on ``dataset`` of training seed ``seed``: trained (or reused), then
    what its rows share measured once (the curve's last point, NLL, training speed,
    reconstructions), then one row per sampler variant in ``todo``. Every seed's model is
    measured with the suite's seed (the same sampling noise: common random numbers)."""
    suite, where = run.suite, run.where(dataset, entry)
    if entry.seeds > 1:
        where += f" seed {seed}"
    run.status(f"{where}: train")
    t = _trained(suite, entry, dataset, run.out, run.dev, run.data_root, run.hook,
                 run.curve_done, trained, flop_batch, seed)
    if entry.evaluation.curve and t.curve.missing(1.0):
        run.status(f"{where}: curve")
        t.curve.measure(t.model, 1.0, t.summary)
    run.status(f"{where}: nll")
    nll = measure_nll(t.model, suite.spec(dataset), entry, suite.seed, run.data_root)
    train_speed = timing.training_speed(t.summary, entry.batch_size)
    ips = train_speed["train_images_per_s"]  # the global batch's: per device
    train_speed.update(
        train_flops_per_image=t.flops, train_flops=t.train_flops,
        train_mfu=timing.mfu(t.flops, ips / zdist.world_size() if ips else None, run.dev))
    run.status(f"{where}: reconstructions")
    recon = measure_reconstruction(t.model, suite.spec(dataset), entry, suite.seed,
                                   run.data_root)
    if recon["recon_n"] is not None:
        run.event("reconstruction", dataset=dataset, model=entry.id)
    after = {**nll, **recon, **first_stage(t.model, t.autoencoder)}  # over the variant's
    for v in todo:
        _run_variant(run, dataset, entry, v, t, train_speed, after, seed)
    t.model = None  # its rows are done: a second stage needs its run only


def _run_variant(run: _Rows, dataset: str, entry: ModelEntry, v: Variant, t: Trained,
                 before: dict, after: dict, seed: int) -> None:
    """One row: sampler variant ``v`` of the entry trained with ``seed`` measured and
    appended, its figures between the entry's ``before`` (training speed) and ``after``
    (NLL, ...), its bootstrap draws beside it (``replicates``)."""
    where = f"{run.where(dataset, entry)} {v.label}"
    run.event("evaluate", dataset=dataset, model=entry.id, sampler=v.name)
    folder = run_name(run.suite, entry, seed)
    grid_rel = Path("grids") / dataset / folder / f"{v.slug}.png"
    measured = measure_variant(t.model, run.suite.spec(dataset), entry, v, run.suite.seed,
                               _inside(run.out, run.out / grid_rel), run.data_root,
                               announce=dataset not in run.announced,
                               stage=lambda text: run.status(f"{where}: {text}"))
    run.announced.add(dataset)
    draws = measured.pop("bootstrap_replicates")
    measured["replicates"] = _write_replicates(
        run.out, Path("replicates") / dataset / folder / f"{v.slug}.json",
        draws if zdist.is_main() else None)
    if measured["grid"] is not None:
        measured["grid"] = grid_rel.as_posix()
    if measured["memorization_panel"] is not None:
        measured["memorization_panel"] = grid_rel.with_name(
            measured["memorization_panel"].name).as_posix()
    model = t.model
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    row = {
        "suite": run.suite.name, "dataset": dataset, "model": entry.id,
        "family": model.family, "sampler": v.name, "sampler_options": v.canonical,
        "network_calls": v.sampler.network_calls(),
        "params": model.num_parameters(), "config_hash": t.config_hash,
        "train_seed": row_seed(entry, seed), "train_seeds": None,
        **before, **measured, **after, **timing.environment(run.dev, run.suite.seed, dtype),
    }
    cols = columns()  # the registry's metric columns included
    missing = set(cols) - set(row)
    assert not missing, f"row lacks {missing}"
    row = _clean({k: row[k] for k in cols})
    if zdist.is_main():
        append_row(run.out / RESULTS_FILE, row)
    run.done.add(row_key(row))
    run.bar.update(1)
    run.event("row", row=row)
