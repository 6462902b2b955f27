"""The `zoo` command line: list, data, train, sample, nll, eval, bench, report, compare,
extractor.

Every error a user can cause prints one line (``zoo: error: ...``) and exits non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shlex
import signal
import sys
import threading
from pathlib import Path

import torch

from . import data as zdata
from . import distributed as zdist
from . import registry, sampling
from .card import write_card
from .core import ConfigError, LikelihoodUnavailable, ZooError, atomic_write, first_line
from .images import LEGIBLE_PIXELS, MAX_GRID_IMAGES, MAX_SCALE
from .limits import check_memory
from .markup import one_line
from .metrics import registry as metric_registry
from .options import check_seed, literal_value, parse_value
from .progress import Progress, interval
from .progress import default as progress_default
from .runs import EVAL_JSON, NLL_JSON, RUN_FILE, load_run, run_info
from .train import TrainConfig, Trainer, resolve_device


def _parse_sets(items: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        pairs.append((key.strip().replace("-", "_"), value.strip()))
    return pairs


# -- signals -----------------------------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (what a scheduler, `timeout`, a container stop or a closed terminal
    sends), raised as an interrupt so that a command stops as it does on Ctrl-C: a training
    run saves a checkpoint at its step and releases its lock, temporary files are removed."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


#: the signals that stop a command as Ctrl-C (SIGINT) does
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_signals_interrupt():
    """SIGTERM and SIGHUP raise ``Terminated`` in the main thread for the block; the
    previous handlers are restored after it. (Elsewhere than in the main thread, where no
    handler can be set, nothing changes.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated(signum)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stopped(e: KeyboardInterrupt) -> tuple[str, int]:
    """How an interrupted command says it stopped, and its exit status: 128 + the signal's
    number, as a shell reports a process a signal ended (130 for Ctrl-C, 143 for SIGTERM,
    129 for SIGHUP)."""
    if isinstance(e, Terminated):
        return f"stopped by {signal.Signals(e.signum).name}", 128 + e.signum
    return "interrupted", 128 + signal.SIGINT


# -- commands ----------------------------------------------------------------------------------
def cmd_list(args) -> int:
    print("models:")
    names = registry.available()
    width = max(16, *(len(n) for n in names), *(len(n) for n in zdata.DATASETS))
    fam = max(len(registry.spec(n).cls.family) for n in names)
    for name in names:
        s = registry.spec(name)
        kind = s.cls.likelihood or "none"
        print(f"  {name:<{width}} {s.cls.family:<{fam}} nll: {kind:<6} {s.description}")
    print("datasets:")
    for name, info in zdata.DATASETS.items():
        where = zdata.find(name, root=args.root)
        place = str(where) if where else "not found (downloaded on first use when online)"
        shape = "x".join(map(str, info.image_shape))
        print(f"  {name:<{width}} {shape:<9} {place}")
    print("searched: " + ", ".join(str(p) for p in zdata.data_roots(args.root)))
    return 0


def cmd_data_check(args) -> int:
    rows = zdata.check(root=args.root)
    if not rows:
        roots = ", ".join(str(p) for p in zdata.data_roots(args.root))
        print(f"no dataset files found in {roots}")
        return 1
    bad = 0
    for r in rows:
        status = "ok" if r["ok"] else "FAILED"
        bad += not r["ok"]
        detail = f"  {r['detail']}" if r.get("detail") and not r["ok"] else ""
        print(f"{status:<7} {r['dataset']:<14} {r['path']}{detail}")
    print(f"{len(rows) - bad} of {len(rows)} files verified")
    return 1 if bad else 0


def cmd_train(args) -> int:
    options, overrides, data_options = _train_settings(args)
    ds = zdata.spec(args.dataset, **data_options)  # parsed once, here; the object travels
    dataset = str(ds)
    out = Path(args.out or f"runs/{args.model}-{ds.name}")
    trainer = _trainer(args, ds, out, options, overrides)
    if not args.resume:  # a resumed run keeps the command that started it (Trainer.resume)
        seed = [] if "seed" in options else ["--seed", str(trainer.config.seed)]
        trainer.command = _command_line(args, seed)
    params = trainer.model.num_parameters()
    procs = f" x {trainer.world} processes" if trainer.world > 1 else ""
    if zdist.is_main():
        print(f"training {trainer.model.name} ({params / 1e6:.2f}M parameters) on "
              f"{dataset} [{trainer.device}{procs}] -> {out}", file=sys.stderr)
    try:
        s = trainer.fit()
    except KeyboardInterrupt as e:
        how, status = _stopped(e)
        print(f"\n{how} at step {trainer.step}; the checkpoint in {out} is saved. "
              f"Continue with: zoo train {args.model} --dataset {shlex.quote(dataset)} --out {out} "
              "--resume", file=sys.stderr)
        return status
    if not zdist.is_main():
        return 0
    steady = s["steady_images_per_s"]
    speed = f"{steady:.0f} images/s after the first step" if steady else \
        f"{s['images_per_s']:.0f} images/s"
    first = s["first_step_seconds"]
    if first is not None and trainer.config.compile:
        speed += f"; first step {first:.1f} s, compilation included"
    print(f"trained {s['model']} for {s['steps']} steps in {s['seconds']:.1f} s "
          f"({speed}); model: {out / 'model.pt'}")
    return 0


def _train_settings(args) -> tuple[dict, dict, dict]:
    """``zoo train``'s flags and ``--set`` pairs sorted into the Trainer's options, the
    model's options (parsed) and the dataset's (text)."""
    options = {
        "steps": args.steps, "seconds": args.seconds, "batch_size": args.batch_size,
        "seed": args.seed, "device": args.device, "compile": args.compile,
    }
    options = {k: v for k, v in options.items() if v is not None}
    model_fields = registry.config_fields(args.model)
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    data_fields = [k for k in (*zdata.DATA_OPTIONS, *zdata.DATA_OPTION_ALIASES)
                   if k not in model_fields and k not in train_fields]
    overrides, data_options = {}, {}
    for key, text in _parse_sets(args.set):
        if key in model_fields:
            overrides[key] = registry.parse_value(args.model, key, text)
        elif key in train_fields:
            options[key] = parse_value(text, train_fields[key].type, f"training option {key}")
        elif key in data_fields:
            data_options[key] = text
        else:
            raise ConfigError(
                f"unknown option {key!r} for {args.model}; model options: "
                f"{', '.join(model_fields)}; training options: {', '.join(train_fields)}; "
                f"dataset options: {', '.join(data_fields)}"
            )
    return options, overrides, data_options


def _trainer(args, ds, out: Path, options: dict, overrides: dict) -> Trainer:
    """The Trainer of ``zoo train``: resuming the run in ``out`` (``--resume``), or over a
    new model."""
    dataset = str(ds)
    if args.resume:
        info = run_info(out)
        if info and (info.get("model"), info.get("dataset")) != (args.model, dataset):
            raise ConfigError(
                f"{out} holds a run of {info.get('model')} on {info.get('dataset')}, "
                f"not {args.model} on {dataset}"
            )
        if overrides:
            raise ConfigError("a resumed run keeps its model options; drop the --set model keys")
        return Trainer.resume(out, data_root=args.root, **options)
    if "steps" not in options and "seconds" not in options:
        raise ConfigError("give a training budget: --steps N and/or --seconds S")
    torch.manual_seed(check_seed(options.get("seed", TrainConfig.seed)))
    model = registry.create(args.model, dataset=ds, **overrides)
    return Trainer(model, ds, out, data_root=args.root, **options)


def _load(run: str, device: str):
    model = load_run(run, map_location=resolve_device(device))
    model.eval()
    return model


def _at_least_one(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{flag} must be >= 1, got {value}")


#: ``zoo sample`` draws at most this many images per call of ``model.sample``
SAMPLE_CHUNK = sampling.SAMPLE_CHUNK


def cmd_sample(args) -> int:
    _at_least_one(args.n, "-n")
    _at_least_one(args.nrow, "--nrow")
    scale = _parse_scale(args.scale)
    known = run_classes(args.run) if args.labels is not None else []
    classes = parse_labels(args.labels, known) if args.labels is not None else None
    if args.per_class is not None:
        _at_least_one(args.per_class, "--per-class")
        if classes is None:
            raise ConfigError("--per-class needs --labels (the classes to draw)")
    several = classes is not None and len(classes) > 1
    if several and args.nrow is not None:
        raise ConfigError("with several --labels each class is one grid row; set the images "
                          "per row with --per-class K, not --nrow")
    n, nrow, labels = args.n, args.nrow, None
    if several:  # one row per class: -n divided among them, or --per-class
        nrow = args.per_class or max(1, n // len(classes))
        n = nrow * len(classes)
    elif classes is not None and args.per_class:
        n = args.per_class
    if n > MAX_GRID_IMAGES and not args.npy:
        raise ConfigError(f"-n {n} is more than a grid shows ({MAX_GRID_IMAGES}); write "
                          "the samples to an array with --npy FILE (the grid then shows the "
                          f"first {MAX_GRID_IMAGES})")
    model = _load(args.run, args.device)
    if classes is not None:
        model.check_labels(classes, len(classes))  # conditional, in range
        check_memory(8 * n, f"the labels of {n:,} samples", "draw fewer with -n or --per-class")
        labels = torch.tensor(classes).repeat_interleave(n // len(classes))
    options = {k: literal_value(v) for k, v in _parse_sets(args.set)}
    written = sampling.write_samples(
        model, n, args.output, npy=args.npy, labels=labels,
        names=_named(known, classes) if several else None, nrow=nrow, scale=scale,
        seed=args.seed, batch_size=SAMPLE_CHUNK, options=options)
    print(f"wrote {n} samples of {model.name}"
          f"{_sample_description(known, classes, n, sampling.sampler_label(model, options))}"
          f" to {_written_files(written)}")
    return 0


def _parse_scale(text: str) -> int | str:
    """``--scale``: ``auto`` or a whole number in 1..MAX_SCALE."""
    if text == "auto":
        return text
    try:
        scale = int(text)
    except ValueError:
        raise ConfigError(f"--scale takes auto or a whole number, got {text!r}") from None
    if not 1 <= scale <= MAX_SCALE:
        raise ConfigError(f"--scale must be in 1..{MAX_SCALE}, got {scale}")
    return scale


def _sample_description(known: list[str], classes: list[int] | None, n: int,
                        sampler: str) -> str:
    """`` (class 3 (3), sampler ddim, 50 steps, eta 0)``: the classes and the sampler drawn
    with (a family's only sampler, ``default``, unnamed), or ''."""
    desc = f"sampler {sampler}" if sampler != "default" else ""
    if classes is not None:
        names = _named(known, classes)
        desc = ", ".join(filter(None, [
            (f"class {classes[0]} ({names[0]})" if len(classes) == 1 else
             f"{len(classes)} classes, {n // len(classes)} per row"), desc]))
    return f" ({desc})" if desc else ""


def _written_files(w: sampling.WrittenSamples) -> str:
    if w.array is None:
        return f"{w.grid}"
    return (f"{w.array}" + (f" (labels in {w.labels})" if w.labels is not None else "")
            + (f" (the first {w.shown} in {w.grid})" if w.shown < w.n else f" and {w.grid}"))


def parse_labels(spec: str, names: list[str] | None = None) -> list[int]:
    """``--labels``: one class (``3``), a range (``0-9``), a list (``1,4,7``), the names of
    the run's classes (``sandal,sneaker``, matched ignoring case, and spaces, ``_`` and
    ``-`` alike) or a mix (``0-2,cat``), as distinct class numbers in the order given.
    A number is always a class number, even where a class is named like one."""
    out: dict[int, None] = {}  # ordered and distinct
    for part in str(spec).split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            if not part or (dash and (not lo or not hi)):
                raise ValueError
            a, b = (int(lo), int(hi)) if dash else (int(part), int(part))
        except ValueError:
            a = b = _class_named(part, names or [], spec)
        if b < a:
            raise ConfigError(f"--labels range {part!r} runs backwards; write {b}-{a}")
        if b - a + 1 > MAX_GRID_IMAGES:  # checked before the range is expanded
            raise ConfigError(f"--labels range {part!r} holds {b - a + 1:,} classes, more than "
                              f"a grid shows ({MAX_GRID_IMAGES})")
        out.update(dict.fromkeys(range(a, b + 1)))
        if len(out) > MAX_GRID_IMAGES:
            raise ConfigError(f"--labels asks for more classes than a grid shows "
                              f"({MAX_GRID_IMAGES})")
    return list(out)


def _fold(name: str) -> str:
    """A class name as ``--labels`` matches it: case ignored, each run of spaces, ``_`` and
    ``-`` one space (kept at the ends: ``0-`` is no name for class "0")."""
    return re.sub(r"[\s_-]+", " ", name.casefold())


#: the most class names an unknown ``--labels`` name's error lists
LISTED_CLASSES = 30


def _class_named(part: str, names: list[str], spec: str) -> int:
    """The number of the class named ``part``; a one-line ConfigError listing the run's
    classes when none (or several) is."""
    if part and names:
        for key in (lambda t: t, str.casefold, _fold):  # exact first, then looser
            hits = [i for i, n in enumerate(names) if key(n) == key(part)]
            if len(hits) == 1:
                return hits[0]
            if hits:
                raise ConfigError(f"--labels {part!r} names several classes ("
                                  + ", ".join(f"{i}={names[i]}" for i in hits)
                                  + "); give the number of the one you mean")
    if not part or part[0].isdigit() or not any(ch.isalpha() for ch in part):
        raise ConfigError(f"--labels takes class numbers like 3, 0-9 or 1,4,7, got {spec!r}")
    if not names:
        raise ConfigError(f"--labels {part!r}: this run records no class names, so give class "
                          "numbers like 3, 0-9 or 1,4,7")
    listed = ", ".join(f"{i}={' '.join(n.split())}"
                       for i, n in enumerate(names[:LISTED_CLASSES]))
    more = f", ... ({len(names)} classes)" if len(names) > LISTED_CLASSES else ""
    raise ConfigError(f"--labels: no class named {part!r}; the run's classes are "
                      f"{listed}{more} (names or numbers)")


def run_classes(run) -> list[str]:
    """The names of the run's classes: run.json's ``classes`` (the Trainer writes them), else
    its dataset's (``zoo.data.describe``: a run of an older zoo), else []. A malformed
    run.json is its one-line CheckpointError."""
    info = run_info(run)
    if "classes" in info:
        return list(info["classes"])
    try:
        return [str(n) for n in zdata.describe(info.get("dataset"))["classes"]]
    except Exception:  # noqa: BLE001 - a model file without its run, a dataset moved away
        return []


def _named(names: list[str], classes: list[int]) -> list[str]:
    return [str(names[i]) if i < len(names) else str(i) for i in classes]


def class_names(run, classes: list[int]) -> list[str]:
    """The names of ``classes`` in the run (``run_classes``), else their numbers."""
    return _named(run_classes(run), classes)


def _run_dataset(args) -> str:
    """--dataset, or the dataset the run was trained on."""
    dataset = args.dataset or run_info(args.run).get("dataset")
    if not dataset:
        raise ConfigError("give --dataset: the run does not say what it was trained on")
    return dataset


def cmd_nll(args) -> int:
    _at_least_one(args.n, "--n")
    _at_least_one(args.batch_size, "--batch-size")
    model = _load(args.run, args.device)
    dataset = _run_dataset(args)
    options = {k: literal_value(v) for k, v in _parse_sets(args.set)}
    if model.likelihood is None:
        raise LikelihoodUnavailable(
            f"{model.name} is a {model.family}: it defines no likelihood, so it has no NLL"
        )
    model.describe_nll(**options)  # the options checked before the data is read
    images, _ = zdata.load(dataset, args.split, root=args.root)
    if args.n is not None:
        images = images[: args.n]
    torch.manual_seed(args.seed)
    values = []
    total = images.shape[0]
    # the whole split: how long it will take is said after the first batch
    estimate = f"zoo nll: about {{time}} for {total} images (--n to use fewer)"
    with Progress(f"nll {model.name}", total, "img",
                  estimate=estimate if args.n is None else None) as bar:
        for start in range(0, total, args.batch_size):
            batch = images[start:start + args.batch_size]
            values.append(model.nll(batch, **options).double().cpu())
            bar.update(batch.shape[0])
    nll = torch.cat(values)
    mean = nll.mean().item()
    stderr = nll.std().item() / math.sqrt(len(nll)) if len(nll) > 1 else float("nan")
    kind = model.likelihood
    detail = model.describe_nll(**options)
    print(f"{model.name} on {dataset} {args.split} ({len(nll)} images): "
          f"{mean:.4f} ± {stderr:.4f} bits/dim ({detail})")
    result = {
        "model": model.name, "dataset": dataset, "split": args.split, "n": len(nll),
        "nll_bpd": mean, "stderr": stderr, "kind": kind, "detail": detail,
        "options": options,
    }
    if args.json:
        text = json.dumps(result, indent=2)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    _update_card(args, NLL_JSON, result)
    return 0


def _command_line(args, extra: list[str] = ()) -> str:
    """The command as the user gave it (``zoo`` its program; under torchrun, torchrun's
    words), ``extra`` words added: what run.json, eval.json and nll.json record."""
    world = zdist.world_size()
    head = ["zoo"] if world == 1 else ["torchrun", f"--nproc_per_node={world}", "-m", "zoo"]
    return shlex.join([*head, *args.argv, *extra])


def _update_card(args, name: str, result: dict) -> None:
    """A run directory's record of a measurement (``nll.json``; ``eval.json`` is written by
    zoo eval itself), with the command that made it and the training step it measured, and
    its model card written again (``zoo.card``). A bare model file has neither."""
    run = Path(args.run)
    if not run.is_dir() or not (run / RUN_FILE).is_file():
        return
    trained = run_info(run).get("trained", {})
    record = {**result, "command": _command_line(args),
              **({"trained_steps": trained["steps"]} if "steps" in trained else {})}
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(run / name, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {write_card(run)}", file=sys.stderr)


def cmd_eval(args) -> int:
    """Sample quality of a run against a dataset split (the registry's metrics), as a table
    and JSON, and with memorization a panel of the samples closest to a training image."""
    from . import metrics  # imported here: torch-fidelity is slow to import

    chosen = args.metrics
    if args.metrics is None:  # the default set, and the memorization check against train
        memo = ("memorization",) if args.split != "train" else ()
        args.metrics = ",".join(metric_registry.default_metrics() + memo)
    metric_registry.normalize_metrics(args.metrics)  # a wrong name fails before loading
    _at_least_one(args.n, "-n")
    _at_least_one(args.batch_size, "--batch-size")
    model = _load(args.run, args.device)
    c, h, w = model.image_shape
    check_memory(2 * args.n * c * h * w, f"{args.n:,} samples of {c}x{h}x{w}",
                 "evaluate fewer samples (-n)")
    dataset = _run_dataset(args)
    if args.extractor == "auto":  # the one made for this data, made now if there is none
        from .metrics import ssl

        args.extractor = str(ssl.ensure(dataset, args.root))
    if chosen is None:
        _add_class_metrics(args, model, dataset)
    options = {k: literal_value(v) for k, v in _parse_sets(args.set)}
    path, panel = _eval_files(args)
    with Progress(f"eval {model.name}") as job:  # its stages; sampling has its own bar
        job.stage("metrics")
        result = _evaluate(args, model, dataset, options, panel)
        job.stage("reconstructions")
        # an autoencoder's: what its compression costs
        if metrics.reconstruction.reconstructs(model):
            result.update(metrics.reconstruction.evaluate(
                model, dataset, args.split, args.extractor, n=args.n,
                batch_size=args.batch_size, root=args.root, bootstrap=args.bootstrap,
                seed=args.seed, device=model.device, inception_weights=args.inception_weights,
                cache=not args.no_cache))
        job.stage("straightness")
        if metrics.straightness.measures(model):  # a flow's: how many steps it needs
            result.update(metrics.straightness.evaluate(
                model, max(2, min(args.n, metrics.straightness.MAX_N)), seed=args.seed))
    if not zdist.is_main():  # under torchrun: every rank sampled, rank 0 reports
        return 0
    _report_eval(args, result, path)
    return 0


def _evaluate(args, model, dataset: str, options: dict, panel: Path) -> dict:
    """``zoo eval``'s metrics of the model's samples (``zoo.metrics.evaluate``)."""
    from . import metrics

    return metrics.evaluate(
        model, dataset, args.split, args.extractor, n=args.n, metrics=args.metrics,
        batch_size=args.batch_size, seed=args.seed, device=model.device,
        inception_weights=args.inception_weights, cache=not args.no_cache, root=args.root,
        progress=None, bootstrap=args.bootstrap,
        panel=panel if args.panel > 0 else None, closest=max(args.panel, 0), **options,
    )


def _add_class_metrics(args, model, dataset: str) -> None:
    """The default ``--metrics`` with the class metrics added where the extractor knows
    the classes (a dataset's classifier); else a note of how to get them."""
    from . import metrics

    extra = ("class_tv", "diversity") + (("class_accuracy", "intra_fid") if model.conditional
                                         else ())
    ext = metrics.resolve_extractor(args.extractor, dataset, args.inception_weights,
                                    announce=False)
    if ext.kind == "classifier":
        args.metrics = ",".join(metric_registry.normalize_metrics(
            args.metrics.split(",") + list(extra)))
    elif ext.name == metrics.INCEPTION:
        print(f"zoo eval: {', '.join(extra)} need the dataset's classifier (its classes); "
              f"add --extractor {dataset}-classifier --metrics ...,"
              f"{','.join(extra)} for them", file=sys.stderr)


def _eval_files(args) -> tuple[Path, Path]:
    """Where ``zoo eval`` writes its JSON (``--json``, RUN/eval.json or MODEL.eval.json)
    and, beside it, the memorization panel."""
    run = Path(args.run)
    path = Path(args.json) if args.json else (
        run / "eval.json" if run.is_dir() else run.with_suffix(".eval.json")
    )
    # beside the JSON: the samples closest to a training image, each beside that image
    stem = path.name.removesuffix(".json").removesuffix(".eval")
    panel = path.with_name("memorization.png" if path.name == "eval.json"
                           else f"{stem}.memorization.png")
    return path, panel


def _report_eval(args, result: dict, path: Path) -> None:
    """``zoo eval``'s JSON written (with the run's card when it is RUN/eval.json) and its
    figures printed."""
    from . import metrics

    run = Path(args.run)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path == run / EVAL_JSON and (run / RUN_FILE).is_file():
        _update_card(args, EVAL_JSON, result)  # eval.json with its command, the card
    else:
        text = json.dumps(result, indent=2) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    print(metrics.format_result(result))
    small = metric_registry.small_reference(result.get("n_reference"))
    if small:
        print(f"zoo eval: warning: {small}", file=sys.stderr)
    collapse = metric_registry.collapse_warning(result)
    if collapse:
        print(f"zoo eval: warning: {collapse}", file=sys.stderr)
    if result.get("recon_psnr") is not None:
        print(metrics.reconstruction.format_reconstruction(result))
    if result.get("straightness") is not None:
        print(metrics.straightness.format_straightness(result))
    print(f"wrote {path}", file=sys.stderr)
    if result.get("memorization_panel"):
        print(f"wrote {result['memorization_panel']} (the {len(result['memorization_closest'])}"
              " samples closest to a training image, each beside it)", file=sys.stderr)


def cmd_bench(args) -> int:
    """Run a benchmark suite into --out (resuming an interrupted run), then write its report;
    ``zoo bench list``: the shipped suites."""
    from .bench.runner import run_suite
    from .bench.suite import describe_suites

    if args.suite == "list":
        suites = describe_suites()
        width = max(len(name) for name, _ in suites)
        for name, description in suites:
            print(f"{name.ljust(width)}  {description}")
        return 0
    if not args.out:
        raise ConfigError("zoo bench SUITE needs --out DIR (where the rows, runs and report go)")
    try:
        results = run_suite(
            args.suite, args.out, device=args.device, only_model=args.only_model,
            only_dataset=args.only_dataset, data_root=args.root,
        )
    except KeyboardInterrupt as e:
        how, status = _stopped(e)
        print(f"\n{how}; the finished rows are in {Path(args.out) / 'results.jsonl'}. "
              "Run the same command again to continue where it stopped.", file=sys.stderr)
        return status
    if not zdist.is_main():  # under torchrun rank 0 alone reports
        return 0
    print(f"wrote {results}", file=sys.stderr)
    if args.no_report:
        return 0
    from .bench.report import write_report

    md = write_report(Path(args.out))
    print(f"wrote {md} and {md.with_suffix('.html').name}")
    return 0


def cmd_choose(args) -> int:
    """Train every candidate family on DATA within --budget, recommend one and say how sure."""
    import shlex

    from .choose.tournament import Options, Tournament

    if not zdist.is_main() or zdist.world_size() > 1:
        raise ConfigError("zoo choose runs in one process (one device); run it without "
                          "torchrun")
    out = Path(args.out or f"choose-{Path(str(args.data)).name}")
    opts = Options(
        data=args.data, budget=args.budget, out=out, families=args.families,
        exclude=args.exclude, conditional=args.conditional, seeds=args.seeds, seed=args.seed,
        device=args.device, extractor=args.extractor, n_round=args.n_round, n_final=args.n,
        candidates=args.candidate or [], data_root=args.root,
        command="zoo " + shlex.join(args.argv + ([] if args.out else ["--out", str(out)])))
    try:
        t = Tournament(opts)
        t.run()
    except KeyboardInterrupt as e:
        how, status = _stopped(e)
        print(f"\n{how}; what was finished is kept in {out}. Run the same command again to "
              "go on where it stopped.", file=sys.stderr)
        return status
    from .choose.decision import recommend
    from .choose.document import headline

    for line in headline(t.state, recommend(t.state, out)):
        print(line.replace("**", ""))
    print(f"wrote {out / 'report.md'} and {t.report}")
    return 0


def cmd_report(args) -> int:
    from .bench.report import write_report

    run = Path(args.dir)
    if not (run / "results.jsonl").is_file():
        raise ConfigError(f"{run} holds no results.jsonl; run `zoo bench SUITE --out {run}` first")
    md = write_report(run)
    print(f"wrote {md} and {md.with_suffix('.html').name}")
    return 0


def cmd_compare(args) -> int:
    """Deltas of NEW against BASE; exit 1 when a metric regresses past its tolerance."""
    from .bench.compare import compare_dirs, parse_tolerances

    for d in (args.base, args.new):
        if not (Path(d) / "results.jsonl").is_file():
            raise ConfigError(f"{d} holds no results.jsonl (a `zoo bench --out` directory)")
    tolerances = parse_tolerances(args.tolerance or [])
    table, regressed = compare_dirs(Path(args.base), Path(args.new), tolerances,
                                    wide=args.wide)
    print(table)
    return 1 if regressed else 0


def cmd_extractor_train(args) -> int:
    """Make the feature extractor of each DATA (the extractor of FID, KID, ...): its
    classifier where it has labels, else (or with --unlabelled) a self-supervised encoder;
    into --out and the cache that zoo eval, zoo bench and the harness look in."""
    from .metrics import extractor_training as et
    from .metrics import ssl

    datasets = [*args.data, *(args.dataset or [])]
    if not datasets:
        raise ConfigError("zoo extractor needs DATA: a built-in name, a folder of images or "
                          "a .npz (e.g. zoo extractor ./my_images --out ext)")
    channels = args.channels and _int_list(args.channels, "--channels")
    shared = {"batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
              "shift": args.shift, "seed": args.seed, "threads": args.threads,
              "device": args.device, "feature_dim": args.feature_dim, "channels": channels,
              "limit": args.limit, "bf16": not args.no_bf16,
              "hflip": None if args.hflip == "auto" else args.hflip == "on"}
    kept = ("hflip", "limit")  # None means something for these: keep it

    def options(cls, **own):
        return cls(**{k: v for k, v in {**shared, **own}.items() if v is not None or k in kept})

    cls_opts = options(et.TrainOptions, epochs=args.epochs)
    ssl_opts = options(ssl.SSLOptions, steps=args.steps, temperature=args.temperature)
    et.check(cls_opts)
    ssl.check(ssl_opts)
    out = Path(args.out) if args.out else None
    for dataset in datasets:
        card, cached = ssl.make(dataset, out, unlabelled=args.unlabelled, ssl=ssl_opts,
                                classifier=cls_opts, root=args.root)
        weights = out / f"{card['name']}.pt" if out else cached
        how = (f"test accuracy {card['test_accuracy']:.4f}" if card["kind"] == "classifier"
               else f"{card['objective']} loss {card['final_loss']:.4f}")
        print(f"wrote {weights} ({how}); zoo eval, zoo bench and the harness use it for "
              f"this data without flags (cached in {cached.parent})")
        if args.card:
            from .metrics.features import resolve_extractor

            _write_validity_card(resolve_extractor(str(weights), None, announce=False),
                                 dataset, None, args.root)
    return 0


def cmd_extractor_card(args) -> int:
    """Measure an extractor's validity card and write card.json, card.md and card.png."""
    from .metrics.features import classifier_card, resolve_extractor

    _at_least_one(args.n, "--n")
    _at_least_one(args.draws, "--draws")
    spec = _card_extractor(args.extractor)
    ext = resolve_extractor(spec, None, announce=False)
    dataset = args.dataset
    if dataset is None:
        try:
            dataset = classifier_card(ext.weights)[0]["dataset"]
        except ZooError:
            raise ConfigError(f"{ext.name} names no dataset: give it with --dataset") from None
    _write_validity_card(ext, dataset, Path(args.out) if args.out else None, args.root,
                         n=args.n, seed=args.seed, draws=args.draws,
                         baseline=not args.no_baseline)
    return 0


def _write_validity_card(ext, dataset, out: Path | None, root, **options) -> None:
    """Measure ``ext``'s validity card on ``dataset`` and write it to ``out`` (default:
    ``validity_card.default_dir``), saying where and which figures fail."""
    from .metrics import validity, validity_card

    out = out or validity_card.default_dir(ext.name, ext.weights)
    with Progress(f"card {ext.name}") as job:
        card = validity.dataset_card(ext, dataset, root=root, progress=job.stage, **options)
    paths = validity_card.write_card(out, card)
    fails = ", ".join(f"{f} under {d}" for who, d, f, _ in card["failures"]
                      if who == "extractor") or "none"
    print(f"wrote {paths[1]}; figures that fail their check: {fails}")


def _card_extractor(given: str) -> str:
    """A shipped name or a .pt path as given; a folder: the one classifier .pt in it."""
    path = Path(given)
    if not path.is_dir():
        return given
    found = sorted(p for p in path.glob("*.pt") if p.with_suffix(".json").is_file())
    if len(found) != 1:
        raise ConfigError(f"{given} holds {len(found)} extractors (a .pt with its .json "
                          "card); name the .pt file")
    return str(found[0])


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}") from None


# -- parser ------------------------------------------------------------------------------------
def _quiet(s: argparse.ArgumentParser) -> None:
    s.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (bars on a terminal, else a line every "
                        "$ZOO_PROGRESS_INTERVAL seconds, default 30)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zoo", description="Generative model zoo: train, sample and score models."
    )
    p.add_argument("--root", help="dataset root (default: $ZOO_DATA_ROOT, ~/.cache/zoo/data)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="models, datasets and where the data was found")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("data", help="dataset files")
    dsub = s.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    c = dsub.add_parser("check", help="verify the checksum of every dataset file found")
    c.set_defaults(func=cmd_data_check)

    s = sub.add_parser("train", help="train a model into a run directory")
    s.add_argument("model", help="model name (see `zoo list`)")
    s.add_argument("--dataset", required=True,
                   help="a built-in name, a folder of images or a .npy/.npz file; dataset "
                   "options via --set, e.g. --set image_size=32")
    s.add_argument("--steps", type=int)
    s.add_argument("--seconds", type=float)
    s.add_argument("--out", help="run directory (default runs/MODEL-DATASET)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    s.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the networks; the compile time is reported apart")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a model or training option, e.g. --set lr=2e-4 (repeatable)")
    _quiet(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw samples from a trained run into a PNG grid")
    s.add_argument("run", help="run directory or model file")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("-o", "--output", default="samples.png")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--nrow", type=int)
    s.add_argument("--scale", default="auto",
                   help="enlarge the grid N times, nearest-neighbour (default auto: each "
                        f"image at least {LEGIBLE_PIXELS} pixels, and at least 2x; 1: off)")
    s.add_argument("--npy", help="also save the uint8 samples as a .npy array (with --labels, "
                                 "their classes too, as FILE.labels.npy beside it)")
    s.add_argument("--device", default="auto")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler option, e.g. --set sampler=ddim --set steps=50, "
                        "--set guidance=2 (a conditional diffusion/AR model)")
    s.add_argument("--labels", metavar="CLASSES",
                   help="a class-conditional model: draw these classes, e.g. 3, 0-9, "
                        "1,4,7 or the run's class names (sandal,sneaker); several classes "
                        "make one grid row each, labelled with the class's name")
    s.add_argument("--per-class", type=int, metavar="K",
                   help="with --labels: K images of each class (default: -n divided among "
                        "the classes, at least 1)")
    _quiet(s)
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("nll", help="negative log-likelihood in bits/dim on a dataset split")
    s.add_argument("run", help="run directory or model file")
    s.add_argument("--dataset", help="default: the dataset the run was trained on")
    s.add_argument("--split", default="test")
    s.add_argument("--n", type=int, help="only the first N images")
    s.add_argument("--batch-size", type=int, default=500)
    s.add_argument("--seed", type=int, default=0,
                   help="seeds the Monte Carlo draws of a sampled bound (VAE, diffusion)")
    s.add_argument("--device", default="auto")
    s.add_argument("--json", help="also write the result as JSON")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="likelihood option, e.g. --set k=100 (VAE importance samples), "
                        "--set mode=all (diffusion: all T terms)")
    _quiet(s)
    s.set_defaults(func=cmd_nll)

    s = sub.add_parser("eval", help="FID, KID, IS and precision/recall of a run's samples")
    s.add_argument("run", help="run directory or model file")
    s.add_argument("--dataset", help="reference dataset (default: the run's)")
    s.add_argument("--split", default="test", help="reference split (default test)")
    s.add_argument("-n", "--n", type=int, default=10000,
                   help="number of samples (default 10000; under torchrun write -n N)")
    s.add_argument("--extractor", help="inception-v3-compat, <dataset>-classifier, classifier, "
                   "random (random weights, a baseline), auto (the one `zoo extractor DATA` "
                   "made for this data, made now if there is none) or an extractor's .pt "
                   "(default: the one made for this data, else InceptionV3 if its weights "
                   "are on disk, else the dataset's classifier)")
    s.add_argument("--inception-weights", metavar="PATH",
                   help="torch-fidelity's InceptionV3 weights (or $ZOO_INCEPTION_WEIGHTS)")
    s.add_argument("--metrics", default=None,
                   help=f"comma-separated, from {metric_registry.describe()}; zoo eval "
                        "adds memorization (unless --split train) and, with a classifier "
                        "extractor, class_tv (and class_accuracy, intra_fid for a "
                        "class-conditional model) to the default set")
    s.add_argument("--batch-size", type=int, default=500)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--bootstrap", type=int, default=200, metavar="B",
                   help="resamples of the generated features for the 95%% intervals of "
                   "FID, KID, IS, precision, recall, density and coverage (0: none)")
    s.add_argument("--panel", type=int, default=8, metavar="K",
                   help="with memorization: draw the K samples closest to a training image, "
                   "each beside it, in memorization.png beside the JSON (0: none)")
    s.add_argument("--device", default="auto")
    s.add_argument("--json", help="write the result here (default RUN/eval.json)")
    s.add_argument("--no-cache", action="store_true", help="recompute the reference features")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler option, e.g. --set sampler=ddim --set steps=50")
    _quiet(s)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("bench", help="run a benchmark suite: train, evaluate and time every "
                       "model and sampler; rows to DIR/results.jsonl, then the report")
    s.add_argument("suite", help="a shipped suite's name (smoke, ci, ...; `zoo bench list` "
                   "describes them) or a suite TOML file")
    s.add_argument("--out", help="output directory (rerun to resume); required to run a suite")
    s.add_argument("--device", help="override the suite's device: auto, cpu, cuda, cuda:N")
    s.add_argument("--only-model", help="run only this model (its id or name)")
    s.add_argument("--only-dataset", help="run only this dataset")
    s.add_argument("--no-report", action="store_true", help="skip writing the report")
    _quiet(s)
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("choose", help="which model family for DATA: train the candidates within "
                       "a budget (successive halving, finalists with several seeds) and "
                       "recommend one, saying how sure")
    s.add_argument("data", help="a dataset name (mnist, fashion-mnist, ...), a folder of "
                   "images or an .npz")
    s.add_argument("--budget", required=True, help="wall time of the whole command (15m, "
                   "900s, 1h30m) or training FLOPs per finalist (6e12)")
    s.add_argument("--out", help="output directory (default: choose-DATA; rerun to resume)")
    s.add_argument("--families", nargs="+", metavar="MODEL", help="only these models")
    s.add_argument("--exclude", nargs="+", metavar="MODEL", help="leave these models out")
    s.add_argument("--candidate", action="append", metavar="MODEL:key=value,...",
                   help="an extra candidate with its own options (repeatable)")
    s.add_argument("--conditional", action="store_true",
                   help="class-conditional candidates (the data must have labels)")
    s.add_argument("--seeds", type=int, default=3, help="training seeds of each finalist (3)")
    s.add_argument("--seed", type=int, default=0, help="the first training seed (0)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    s.add_argument("--extractor", help="feature extractor (default: the dataset's, announced)")
    s.add_argument("--n", type=int, default=1000, help="samples per finalist seed (1000)")
    s.add_argument("--n-round", type=int, default=500,
                   help="samples per candidate in the earlier rounds (500)")
    _quiet(s)
    s.set_defaults(func=cmd_choose)

    s = sub.add_parser("report", help="results.csv, report.md, report.html and figures of a "
                       "bench directory")
    s.add_argument("dir", help="a `zoo bench --out` directory")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("compare", help="compare two bench directories; exit 1 on a regression")
    s.add_argument("base", help="baseline bench directory")
    s.add_argument("new", help="bench directory to check")
    s.add_argument("--tolerance", nargs="+", action="extend", metavar="METRIC=TOL",
                   help="allowed regression per metric, absolute or relative: fid=10%% "
                   "nll_bpd=0.02")
    s.add_argument("--wide", action="store_true",
                   help="every column on every line (default: grouped by row, 120 columns)")
    s.set_defaults(func=cmd_compare)
    p.extractor_actions = _extractor_parser(sub)
    return p


def _extractor_parser(sub) -> dict:
    """``zoo extractor``'s parser; returns its actions (``zoo extractor DATA`` is
    ``zoo extractor train DATA``, see ``_extractor_argv``)."""
    s = sub.add_parser("extractor", help="feature extractors for the metrics (FID, KID, ...): "
                       "zoo extractor DATA [--out DIR] makes the one of your data")
    esub = s.add_subparsers(dest="extractor_command", required=True, metavar="DATA | ACTION")
    t = esub.add_parser("train", help="(the default action) make DATA's extractor: a "
                        "classifier where it has labels, else a self-supervised encoder")
    t.add_argument("data", nargs="*", metavar="DATA",
                   help="a built-in name, a folder of images or a .npz, with options as in "
                   "'path?size=32'")
    t.add_argument("--dataset", action="append", help="DATA, the older spelling (repeatable)")
    t.add_argument("--out", help="also write NAME.pt and NAME.json here (always: the cache, "
                   "$ZOO_CACHE/extractors or ~/.cache/zoo/extractors, keyed by the data's "
                   "content hash, where zoo eval finds it)")
    t.add_argument("--unlabelled", action="store_true",
                   help="ignore the labels: a self-supervised encoder even for labelled data")
    # defaults (None): zoo.metrics.extractor_training.TrainOptions's and ssl.SSLOptions's
    t.add_argument("--epochs", type=int, help="classifier: default 6")
    t.add_argument("--steps", type=int, help="self-supervised: default 600")
    t.add_argument("--temperature", type=float, help="self-supervised: NT-Xent's, default 0.2")
    t.add_argument("--batch-size", type=int, help="default 128")
    t.add_argument("--lr", type=float, help="peak learning rate, default 0.05 (classifier, "
                   "SGD), 0.002 (encoder, AdamW)")
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--shift", type=int, help="random shifts of up to N pixels (default 2)")
    t.add_argument("--hflip", choices=("auto", "on", "off"), default="auto",
                   help="mirror flips (auto: off for digits, whose classes they change)")
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int, help="default: torch's")
    t.add_argument("--device", help="default cpu")
    t.add_argument("--no-bf16", action="store_true", help="train in float32")
    t.add_argument("--channels", help="the conv stages' widths, default 32,64,128")
    t.add_argument("--feature-dim", type=int, help="the feature layer's width, default 128")
    t.add_argument("--limit", type=int, help="use the first N images of each split only")
    t.add_argument("--card", action=argparse.BooleanOptionalAction, default=True,
                   help="measure its validity card beside the weights, NAME-card/ (`zoo "
                   "extractor card`; 30 s to 2 min on a CPU); --no-card skips it")
    _quiet(t)
    t.set_defaults(func=cmd_extractor_train)
    c = esub.add_parser("card", help="an extractor's validity card: how FID, KID, precision, "
                        "recall, density, coverage and the memorization check respond to "
                        "graded defects, and the N each needs")
    c.add_argument("extractor", metavar="DIR_OR_NAME",
                   help="a shipped extractor's name, a classifier .pt, or its folder")
    c.add_argument("--dataset", help="the held-out images' dataset (default: the extractor's)")
    c.add_argument("--n", type=int,
                   help="images per defective set (default 1000, at most the held-out "
                   "images left beside the reference)")
    c.add_argument("--draws", type=int, default=100,
                   help="bootstrap draws for the N a 5%% interval needs (default 100)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--no-baseline", action="store_true",
                   help="skip the randomly initialised network's rows")
    c.add_argument("--out", help="the card's folder (default: beside the weights, "
                   "<name>-card/; extractor-cards/<name>/ for a shipped one)")
    c.set_defaults(func=cmd_extractor_card)
    return esub.choices


def _extractor_argv(argv: list[str], actions) -> list[str]:
    """``zoo extractor DATA ...`` as ``zoo extractor train DATA ...``: a word after
    ``extractor`` that names no action is the data."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):  # global options: --root DIR
        i += 1 if "=" in argv[i] or argv[i] in ("-h", "--help") else 2
    if i + 1 < len(argv) and argv[i] == "extractor" and argv[i + 1] not in actions \
            and not argv[i + 1].startswith("-"):
        return [*argv[:i + 1], "train", *argv[i + 1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_extractor_argv(given, parser.extractor_actions))
    args.argv = given  # the command as given
    try:
        interval()  # a wrong $ZOO_PROGRESS_INTERVAL is refused before any work
        if getattr(args, "seed", None) is not None:
            check_seed(args.seed, "--seed")
        # under torchrun: join the process group (a no-op otherwise); progress on stderr
        # unless --quiet: a bar on a terminal, else a line now and then
        with _stop_signals_interrupt(), zdist.launched(), progress_default(
                not getattr(args, "quiet", False)):
            return args.func(args)
    except ZooError as e:  # one line, whatever the message quotes (numpy's, a file name)
        print(f"zoo: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how, status = _stopped(e)
        print(f"zoo: {how}", file=sys.stderr)
        return status
    except (OSError, torch.cuda.OutOfMemoryError) as e:
        print(f"zoo: error: {one_line(e)}", file=sys.stderr)
        return 1
    except torch.distributed.DistError as e:  # a peer under torchrun died or went silent
        rank = os.environ.get("RANK", "?")
        print(f"zoo: error: rank {rank} lost its peers ({first_line(e)[:200]}); another process "
              "of this torchrun job failed or stopped answering: its error says why",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
