"""The model card of a run: ``RUN/README.md``, rendered from the run's own files.

One function renders it (``render_card``) from ``run.json`` (the model, its options,
parameters, dataset and its content hash, budget, training time and device), ``eval.csv``
(the streaming FID), ``eval.json`` (``zoo eval``) and ``nll.json`` (``zoo nll``), and links
``samples.png``; the Trainer writes it at the end of training and ``zoo eval`` and
``zoo nll`` write it again after measuring, so every writer shows the same card. It ends
with the commands that reproduce the run and its figures.

Every string the card shows from those files (a model or dataset name, class names, options,
a device, a command) goes through ``zoo.markup``: one line, shown as written, never
markup, so a class folder's name cannot forge a section or carry script. ``run.json`` is
checked by ``runs.run_info`` (a value of the wrong type, nested ones included, is one
``CheckpointError`` naming the file and key); ``eval.json``, ``nll.json`` and ``eval.csv``
are records of measurements beside it: one that is unreadable is left out, a figure of the
wrong type is shown as ``invalid``, so that a bad record never fails the command that writes
the card.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shlex
from pathlib import Path

from .core import atomic_write, config_from_dict, config_to_dict
from .limits import duration
from .markup import code, fence, text
from .runs import (
    CARD_FILE,
    EVAL_FILE,
    EVAL_JSON,
    NLL_JSON,
    SAMPLES_FILE,
    device_name,
    run_info,
)

#: training options the command line takes as flags, not --set
_TRAIN_FLAGS = {"steps", "seconds", "batch_size", "seed", "device", "compile"}


def _value(v) -> str:
    """An option's value as ``--set`` takes it."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return ",".join(_value(x) for x in v)
    return str(v)


def _model_defaults(info: dict) -> dict:
    """The model options ``zoo train`` would choose by itself for the run's dataset ({} when
    the model is no longer registered)."""
    from . import data as zdata
    from . import registry

    try:
        s = registry.spec(info["model"])
        ds = zdata.spec(info["dataset"])
        key = ds.source if ds.builtin else None
        values = {**s.defaults, **s.dataset_defaults.get(key, {})}
        return config_to_dict(config_from_dict(s.cls.Config, values))
    except Exception:  # noqa: BLE001 - a card is written for any run that trained
        return {}


def _filled(info: dict) -> set[str]:
    """The run's model options that zoo filled in (not given by whoever trained it)."""
    from . import registry

    try:
        return registry.filled_fields(info["model"])
    except Exception:  # noqa: BLE001 - a model no longer registered: none known
        return set()


def train_command(info: dict, run: str | Path) -> str:
    """The ``zoo train`` command that trains the run again (the same weights: the data order
    and every RNG follow the seed), with every option that differs from its default."""
    from .trainconfig import TrainConfig

    tc, trained = info.get("train_config", {}), info.get("trained", {})
    world = int(info.get("world_size", 1) or 1)
    head = (["torchrun", f"--nproc_per_node={world}", "-m", "zoo"] if world > 1 else ["zoo"])
    words = [*head, "train", info["model"], "--dataset", info["dataset"]]
    steps = trained.get("steps") if tc.get("seconds") is not None else None
    steps = steps or tc.get("steps")
    if steps is not None:
        words += ["--steps", str(steps)]
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for key, flag in (("batch_size", "--batch-size"), ("seed", "--seed"), ("device", "--device")):
        if key in tc and tc[key] != defaults.get(key):
            words += [flag, _value(tc[key])]
    if tc.get("compile"):
        words.append("--compile")
    words += ["--out", str(run)]
    model_defaults = _model_defaults(info)
    conditional = info.get("model_config", {}).get("conditional")
    filled = _filled(info)
    for key, v in info.get("model_config", {}).items():
        if key == "num_classes" and conditional or key in filled:
            continue  # counted from the dataset's labels; filled in by zoo
        if key not in model_defaults or model_defaults[key] != v:
            words += ["--set", f"{key}={_value(v)}"]
    for key, v in tc.items():
        if key not in _TRAIN_FLAGS and key in defaults and defaults[key] != v:
            words += ["--set", f"{key}={_value(v)}"]
    return shlex.join(words)


def reproduce_lines(info: dict, run: str | Path) -> list[str]:
    """The card's ``zoo train`` line: the command as it was given (with the seed), which
    run.json records; a run.json without one (older runs, the Python API) gets
    ``train_command``'s. A time budget is followed by the steps that give the same weights."""
    command = info.get("command")
    if not command:
        return [train_command(info, run)]
    steps = info.get("trained", {}).get("steps")
    if info.get("train_config", {}).get("seconds") is None or steps is None:
        return [command]
    return [command, f"# a time budget: --steps {steps} in place of --seconds trains the same "
                     "weights on any machine"]


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _last_streaming_fid(run: Path) -> dict | None:
    try:
        with (run / EVAL_FILE).open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error):
        return None
    return rows[-1] if rows else None




def _eval_section(result: dict, steps) -> list[str]:
    """``zoo eval``'s figures as a table with their 95% intervals, and how they were
    measured (the columns and formats of the metric registry, as ``zoo eval`` prints them)."""
    from .metrics import registry  # noqa: PLC0415 - imported only when there is a result

    lines = ["| metric | value | 95% interval |", "|---|---|---|"]
    for col in registry.columns():
        if not col.label or col.key not in result:
            continue
        value = _figure(col.format, result[col.key])
        spread = result.get(col.spread) if col.spread else None
        if spread is not None:
            value += " ± " + _figure(col.format, spread)
        ci = result.get(f"{col.key}_ci95")
        interval = "" if ci is None else (
            "[" + ", ".join(_figure(col.format, v) for v in ci) + "]"
            if isinstance(ci, list) and len(ci) == 2 else "invalid")
        lines.append(f"| {col.label} | {value} | {interval} |")
    sha = text(str(result.get("extractor_weights_sha256", ""))[:12])
    options = result.get("sampler_options") or result.get("options") or {}
    how = (f"Measured by `zoo eval` on {text(result.get('n_generated', '?'))} generated images "
           f"against {text(result.get('n_reference', '?'))} images of "
           f"{text(result.get('dataset', '?'))} {text(result.get('split', '?'))}, features of "
           f"{code(result.get('extractor', '?'))}"
           + (f" (weights sha256 {sha}…)" if sha else "")
           + (f", sampler options {code(json.dumps(options))}" if options else "")
           + (f", after {text(result['trained_steps'])} training steps"
              if "trained_steps" in result else "") + ".")
    small = registry.small_reference(result.get("n_reference"))
    if small:
        how += f" Note: {small}."
    if "trained_steps" in result and steps is not None and result["trained_steps"] != steps:
        how += (f" The run has trained to step {steps} since: run `zoo eval` again for the "
                "current weights.")
    model_figures = [text for text in (_reconstruction_text(result),
                                       _straightness_text(result)) if text]
    return [*lines, "", how, *(line for text in model_figures
                               for line in ["", *fence(text.splitlines())])]


def _figure(spec: str, value) -> str:
    """A figure of eval.json in its column's format; ``invalid`` when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "invalid"
    return spec.format(value)


def _reconstruction_text(result: dict) -> str:
    from .metrics.reconstruction import format_reconstruction  # noqa: PLC0415 - as above

    try:
        return format_reconstruction(result)
    except (TypeError, ValueError, KeyError, IndexError):  # a figure of the wrong type
        return "reconstruction figures: invalid (eval.json)"


def _straightness_text(result: dict) -> str:
    from .metrics.straightness import format_straightness  # noqa: PLC0415 - as above

    try:
        return format_straightness(result)
    except (TypeError, ValueError, KeyError, IndexError):  # a figure of the wrong type
        return "straightness: invalid (eval.json)"


def render_card(run: str | Path) -> str:
    """The model card of the run in ``run``, as Markdown."""
    run = Path(run)
    info = run_info(run)
    out = [*_header(run, info), *_model_section(info), *_data_section(info),
           *_training_section(info)]
    metrics, result, nll = _metrics_section(run, info.get("trained", {}).get("steps"))
    return "\n".join([*out, *metrics, *_reproduce_section(run, info, result, nll)])


def _header(run: Path, info: dict) -> list[str]:
    """The title, one sentence of what the model is, and the end-of-training grid."""
    tc, params = info.get("train_config", {}), info.get("params")
    steps = info.get("trained", {}).get("steps")
    out = [f"# {text(info['model'])} on {text(info['dataset'])}", ""]
    family = {"gan": "GAN", "vae": "VAE", "autoregressive": "autoregressive",
              "diffusion": "diffusion"}.get(info.get("family"), text(info.get("family") or ""))
    summary = [f"{'An' if family[:1] in 'aeiou' and family else 'A'} {family} model"
               .replace("  ", " ")]
    if params is not None:
        summary.append(f"of {params / 1e6:.2f}M parameters ({params:,})")
    summary.append(f"trained with zoo on {text(info['dataset'])}")
    if steps is not None:
        summary.append(f"for {steps:,} steps")
    out += [" ".join(summary) + ".", ""]
    if (run / SAMPLES_FILE).is_file():
        sampler = f" ({text(info['sampler'])})" if isinstance(info.get("sampler"), str) else ""
        out += [f"![samples]({SAMPLES_FILE})", "",
                f"*{tc.get('sample_n', '')} samples drawn at the end of training with the "
                f"EMA weights (`samples.png`) and the model's default sampler{sampler}; "
                "`zoo sample` below draws with any.*".replace("** ", "*"), ""]
    return out


def _model_section(info: dict) -> list[str]:
    mc, params = info.get("model_config", {}), info.get("params")
    out = ["## Model", "", f"- model: {code(info['model'])} ({text(info.get('family', '?'))})"]
    if params is not None:
        out.append(f"- parameters: {params:,}")
    if "image_shape" in info:
        out.append(f"- image shape: {'x'.join(map(str, info['image_shape']))}")
    if mc:
        filled = _filled(info)
        out.append("- options: " + ", ".join(code(f"{k}={_value(v)}") for k, v in mc.items()
                                               if k not in filled))
        if "autoencoder_sha256" in filled and mc.get("autoencoder_sha256"):
            out.append(f"- autoencoder weights (held in this model's checkpoint): sha256 "
                       f"{code(mc['autoencoder_sha256'])}")
    return [*out, ""]


def _data_section(info: dict) -> list[str]:
    out = ["## Data", "", f"- dataset: {code(info['dataset'])} (training split)"]
    if info.get("dataset_sha256"):
        out.append(f"- content sha256 (shape, pixels and labels of the training images): "
                   f"{code(info['dataset_sha256'])}")
    if info.get("classes"):
        names = info["classes"]
        shown = ", ".join(map(text, names[:20])) + (f", … ({len(names)} classes)" if len(names) > 20
                                         else "")
        out.append(f"- classes: {shown}")
    return [*out, ""]


def _training_section(info: dict) -> list[str]:
    tc, trained = info.get("train_config", {}), info.get("trained", {})
    out = ["## Training", ""]
    budget = [f"{tc['steps']:,} steps" if tc.get("steps") is not None else "",
              f"{tc['seconds']:g} s" if tc.get("seconds") is not None else ""]
    budget = [b for b in budget if b]
    out.append(f"- budget: {' or '.join(budget) or '?'}"
               + (" (whichever ends first)" if len(budget) > 1 else "")
               + f", batch {text(tc.get('batch_size'))}, seed {text(tc.get('seed'))}")
    if trained:
        out.append(f"- trained: {trained.get('steps', 0):,} steps in "
                   f"{duration(trained.get('seconds', 0), digits=1)} "
                   f"({trained.get('images_per_s', 0):,.0f} images/s) on "
                   f"{text(trained.get('device', '?'))}"
                   + (f" x {info['world_size']} processes" if info.get("world_size", 1) > 1
                      else "")
                   + (f", finished {text(trained['finished'])}" if trained.get("finished")
                      else ""))
    out.append("- training options: " + ", ".join(
        code(f"{k}={_value(v)}") for k, v in tc.items() if k not in {"steps", "seconds"}))
    return [*out, ""]


def _metrics_section(run: Path, steps: int | None) -> tuple[list[str], dict | None,
                                                            dict | None]:
    """The section's lines, and the run's ``eval.json`` and ``nll.json`` (None: none)."""
    out = ["## Metrics", ""]
    measured = False
    stream = _last_streaming_fid(run)
    if stream:
        out += [f"- streaming FID during training: {text(stream.get('fid'))} at step "
                f"{text(stream.get('step'))} ({text(stream.get('n'))} samples, extractor "
                f"{code(stream.get('extractor'))}; `eval.csv`)", ""]
        measured = True
    result = _read_json(run / EVAL_JSON)
    if result:
        out += _eval_section(result, steps) + [""]
        measured = True
    nll = _read_json(run / NLL_JSON)
    if nll and isinstance(nll.get("nll_bpd"), int | float):
        stderr = nll.get("stderr")
        err = f" ± {stderr:.4f}" if isinstance(stderr, int | float) else ""
        out += [f"- NLL: {nll['nll_bpd']:.4f}{err} bits/dim ("
                f"{text(nll.get('detail'))}): mean ± standard error over {text(nll.get('n'))} "
                f"images of {text(nll.get('dataset'))} {text(nll.get('split'))}, measured by "
                "`zoo nll`" + (f" after {text(nll['trained_steps'])} training steps"
                   if "trained_steps" in nll else "") + ".", ""]
        measured = True
    if not measured:
        out += ["Not measured yet: `zoo eval` and `zoo nll` (below) add their figures here.",
                ""]
    return out, result, nll


def _reproduce_section(run: Path, info: dict, result: dict | None,
                       nll: dict | None) -> list[str]:
    """The commands that made the run and its figures, or would."""
    q = shlex.quote(str(run))
    commands = reproduce_lines(info, run)
    commands.append(str(result["command"]) if result and result.get("command") else
                    f"zoo eval {q}          # FID, KID, IS, precision/recall -> eval.json")
    if nll and nll.get("command"):
        commands.append(str(nll["command"]))
    elif info.get("family") != "gan":
        commands.append(f"zoo nll {q}           # bits/dim -> nll.json")
    commands.append(f"zoo sample {q} -n 64 -o samples.png")
    return ["## Reproduce", "", *fence(commands, "bash"), "",
            "*Written by zoo (`zoo.card`); `zoo eval` and `zoo nll` update it.*", ""]


def write_card(run: str | Path) -> Path:
    """Write ``RUN/README.md`` (atomically) and return its path."""
    path = Path(run) / CARD_FILE
    text = render_card(run)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


__all__ = ["device_name", "render_card", "reproduce_lines", "train_command", "write_card"]
