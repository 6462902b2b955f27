"""``zoo choose``: the tournament in an output directory, resumable.

``OUT/choose.json`` holds the arguments, the plan (candidates, presets, probes, steps of
every round) and every evaluation as soon as it is made; ``OUT/runs/<candidate>/seed<k>``
are ordinary run directories. Run again with the same arguments, an interrupted tournament
goes on where it stopped: finished evaluations are read back, a training resumes from its
checkpoint, and the time already spent counts against the budget.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import data as zdata
from .. import registry
from ..errors import ConfigError, MetricsError, TrainingDiverged
from ..files import atomic_write
from ..limits import duration
from ..progress import Progress
from ..readers import read_json
from ..runs import CHECKPOINT_FILE
from ..train import Trainer, resolve_device
from . import document, evaluation, plan, presets
from .probe import probe, train_flops

STATE_FILE = "choose.json"
#: arguments that must match to resume a tournament
_SAME = ("data", "budget", "families", "exclude", "conditional", "seeds", "seed", "extractor",
         "n_round", "n_final", "candidates")


@dataclass
class Options:
    data: str
    budget: str  # as given: "15m", "6e12"
    out: Path
    families: list[str] | None = None
    exclude: list[str] | None = None
    conditional: bool = False
    seeds: int = plan.SEEDS
    seed: int = 0
    device: str = "auto"
    extractor: str | None = None
    n_round: int = 500  # samples per evaluation in the rounds before the final
    n_final: int = 1000  # samples per finalist seed
    candidates: list[str] = field(default_factory=list)  # extra: "MODEL:key=value,..."
    progress: bool | None = None
    data_root: str | None = None
    command: str | None = None

    def key(self) -> dict:
        return {k: getattr(self, k) for k in _SAME}


class Clock:
    """Seconds spent on the tournament, across invocations."""

    def __init__(self, before: float):
        self.before, self.start = before, time.monotonic()

    def elapsed(self) -> float:
        return self.before + time.monotonic() - self.start


def parse_candidate(text: str) -> tuple[str, dict]:
    """``MODEL`` or ``MODEL:key=value,key=value`` (values typed by the model's config)."""
    model, _, rest = str(text).partition(":")
    registry.spec(model)
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--candidate {text!r}: expected MODEL:key=value,...")
        overrides[key.strip()] = registry.parse_value(model, key.strip(), value.strip())
    return model, overrides


class Tournament:
    def __init__(self, opts: Options):
        if opts.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {opts.seeds}")
        if opts.n_round < 50 or opts.n_final < 50:
            raise ConfigError("--n and --n-round must be >= 50")
        self.opts = opts
        self.budget = plan.parse_budget(opts.budget)
        presets.candidates(opts.families, opts.exclude)  # refused now, not after the data
        for text in opts.candidates:
            parse_candidate(text)
        self.out = Path(opts.out)
        self.ds = zdata.spec(opts.data)
        self.device = resolve_device(opts.device)
        self.state = self._load()
        self.clock = Clock(self.state.get("elapsed", 0.0))
        self.bar: Progress | None = None

    # -- state -----------------------------------------------------------------------------
    def _load(self) -> dict:
        path = self.out / STATE_FILE
        key = json.loads(json.dumps(self.opts.key(), default=str))
        if path.is_file():
            state = read_json(path, "zoo choose state")
            if state.get("args") != key:
                raise ConfigError(f"{self.out} holds a zoo choose run with other arguments "
                                  f"({path}); give another --out, or the same arguments to "
                                  "resume it")
            return state
        if self.out.exists() and any(self.out.iterdir()):
            raise ConfigError(f"{self.out} exists and is not a zoo choose directory; give a "
                              "new or empty --out")
        return {"version": 1, "args": key, "elapsed": 0.0, "evals": {}, "trained": {},
                "replans": {}, "diverged": {}}

    def save(self) -> None:
        self.state["elapsed"] = self.clock.elapsed()
        self.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.state, indent=1, default=str)
        atomic_write(self.out / STATE_FILE, lambda tmp: Path(tmp).write_text(text))

    def say(self, text: str) -> None:
        """A line on stderr (above the progress bar), and the bar's stage."""
        if self.bar is not None:
            self.bar.write(f"zoo choose: {text}")
            self.bar.stage(text)
            self._tick()
        else:
            print(f"zoo choose: {text}", file=sys.stderr)

    def _tick(self) -> None:
        if self.bar is not None and self.budget.seconds is not None:
            self.bar.set(round(min(self.clock.elapsed(), self.budget.seconds)))

    # -- the whole run -----------------------------------------------------------------------
    def run(self) -> dict:
        total = self.budget.seconds
        with Progress(f"choose {self.ds.name}", total, "s" if total else "it",
                      enabled=self.opts.progress, initial=min(self.clock.elapsed(), total or 0),
                      clock=self.clock.elapsed if total else None) as self.bar:
            self._data()
            self.ref = evaluation.Reference(self.ds, self._extractor(), self.device,
                                            self.opts.data_root)
            self.state["extractor"] = self.ref.extractor.record()
            if "plan" not in self.state:
                self._plan()
            schedule = self.state["plan"]["schedule"]
            for i in range(len(schedule)):
                self._round(i)
            self.say("writing the report")
            self.state["command"] = self.opts.command
            self.report = document.write(self.state, self.out)
            self.state["finished"] = True
            self.save()
        return self.state

    def _extractor(self) -> str | None:
        """The extractor to score with: the one asked for, else the data's default; where
        the data has none (no shipped classifier, nothing made for it, no InceptionV3
        weights), one is made now, within the budget, and cached for later commands."""
        from ..metrics import features, ssl

        if self.opts.extractor is not None:
            return self.opts.extractor
        try:
            features.resolve_extractor(None, self.ds, announce=False)
            return None
        except MetricsError:
            self.say(f"no feature extractor for {self.ds.name}: making one "
                     "(zoo extractor DATA), cached for later commands")
            ssl.ensure(self.ds, self.opts.data_root)
            return "auto"

    def _data(self) -> None:
        self.images, labels = zdata.load(self.ds, "train", root=self.opts.data_root)
        self.labels = labels if labels is not None and (labels >= 0).all() else None
        if self.opts.conditional and self.labels is None:
            raise ConfigError(f"--conditional needs class labels, and {self.ds} has none")

    # -- the plan ----------------------------------------------------------------------------
    def _entries(self) -> list[tuple[str, list[presets.Preset]]]:
        """(candidate id, its presets) of every candidate."""
        chosen, left_out = presets.candidates(self.opts.families, self.opts.exclude)
        self.state["left_out"] = left_out
        cond = {"conditional": True} if self.opts.conditional else {}
        out = [(m, [p.with_config(**cond) for p in presets.PRESETS[m]]) for m in chosen]
        for i, text in enumerate(self.opts.candidates):
            model, overrides = parse_candidate(text)
            base = presets.PRESETS.get(model, (presets.Preset(model, "default"),))[0]
            p = base.with_config(**cond, **overrides)
            p = presets.Preset(p.model, "custom " + ",".join(f"{k}={v}" for k, v in
                                                              overrides.items()),
                               p.config, p.batch_size, p.train, p.min_steps)
            out.append((f"{model}-custom{i + 1}", [p]))
        return out

    def _probe(self, preset: presets.Preset, flops: float | None = None) -> plan.Probe:
        self.say(f"measuring {preset.label} on {self.device.type}")
        return probe(preset, self.ds, self.images, self.labels, self.device, flops)

    def _plan(self) -> None:
        entries = self._entries()
        if self.budget.flops is not None:
            picked, probes = self._pick_by_flops(entries)
        else:
            picked, probes = self._pick_by_time(entries)
        if not picked:
            raise ConfigError("no candidate can learn anything in this budget (" + "; ".join(
                f"{c} {w.removeprefix('left out: ')}" for c, w in self.state["left_out"].items()
                if c in dict(entries)) + ")")
        schedule, final = self._schedule(picked, probes)
        self.state["plan"] = {
            "schedule": schedule, "budget": str(self.budget), "device": str(self.device),
            "candidates": {cid: {**asdict(p), "why": why, "probe": asdict(probes[cid])}
                           for cid, (p, why) in picked.items()},
            "final_seconds": final,
            "steps": {cid: self._steps(probes[cid], p, schedule, final)
                      for cid, (p, _) in picked.items()},
        }
        self.state["alive"] = [sorted(picked)]
        self.save()
        for cid, (p, why) in picked.items():
            steps = self.state["plan"]["steps"][cid]
            self.say(f"{cid}: preset {p.name} ({why}); steps per round {steps}")

    def _schedule(self, picked: dict, probes: dict) -> tuple[list, float]:
        """The rounds, none shorter than the share at which every candidate has had its
        preset's ``min_steps``, and the final length in seconds (time budgets; it depends
        on the rounds, which depend on it: settled by a few passes)."""
        final = 0.0
        schedule = plan.rounds(len(picked))
        for _ in range(1 if self.budget.flops is not None else 4):
            if self.budget.seconds is not None:
                final = self._final_seconds(schedule, list(probes.values()))
            least = max(p.min_steps / max(1, self._final_steps(probes[c], p, final))
                        for c, (p, _) in picked.items())
            schedule = plan.rounds(len(picked), least)
        return schedule, final

    def _final_steps(self, pr: plan.Probe, preset: presets.Preset, final_seconds: float) -> int:
        if self.budget.flops is not None:
            return plan.steps_for_flops(self.budget.flops, pr, preset.batch_size)
        return plan.steps_for(final_seconds, pr)

    def _settle(self, entries, final_steps) -> dict:
        """{candidate: (preset, why)} by the preset rule, the left-out ones recorded."""
        picked = {}
        for cid, ps in entries:
            if cid not in presets.PRESETS:
                picked[cid] = (ps[0], "given with --candidate")
                continue
            preset, why = presets.pick(ps, lambda p, c=cid: final_steps(c, p))
            if preset is None:
                self.state["left_out"][cid] = why
                self.say(f"{cid}: {why}")
            else:
                picked[cid] = (preset, why)
        return picked

    def _pick_by_flops(self, entries):
        """Under a FLOPs budget: presets by their counted FLOPs, then the picked ones timed
        (for the progress and the report)."""
        flops = {}

        def final_steps(cid, preset):
            key = (cid, preset.name)
            if key not in flops:
                flops[key] = train_flops(preset, self.ds, self.images, self.labels,
                                         self.device)
            return plan.steps_for_flops(self.budget.flops,
                                        plan.Probe(0.0, 0.0, flops_per_image=flops[key]),
                                        preset.batch_size)

        picked = self._settle(entries, final_steps)
        probes = {cid: self._probe(p, flops.get((cid, p.name))) for cid, (p, _) in picked.items()}
        for cid, (p, _) in picked.items():  # a --candidate is counted here
            if probes[cid].flops_per_image is None:
                probes[cid] = dataclasses.replace(probes[cid], flops_per_image=train_flops(
                    p, self.ds, self.images, self.labels, self.device))
        return picked, probes

    def _pick_by_time(self, entries):
        """Under a time budget: the smallest preset of each timed, the final length planned
        from those (halving rounds for all), each larger preset timed only when the small
        one's steps reach its need (a larger one is slower)."""
        entries_by = dict(entries)
        probes = {cid: {ps[0].name: self._probe(ps[0])} for cid, ps in entries}
        final = self._final_seconds(plan.rounds(len(entries)),
                                    [next(iter(p.values())) for p in probes.values()])
        if final <= 0:
            raise ConfigError(
                f"--budget {self.opts.budget} is too small for these candidates: after "
                f"{duration(self.clock.elapsed())} spent measuring them, their evaluations "
                f"alone ({self.opts.n_round} samples each per round, {self.opts.n_final} per "
                "finalist seed) would take the rest; give a larger --budget, or smaller --n "
                "and --n-round")

        def final_steps(cid, preset):
            if preset.name not in probes[cid]:
                small = probes[cid][entries_by[cid][0].name]
                if plan.steps_for(final, small) < preset.min_steps:
                    return 0
                probes[cid][preset.name] = self._probe(preset)
            return plan.steps_for(final, probes[cid][preset.name])

        picked = self._settle(entries, final_steps)
        return picked, {cid: probes[cid][p.name] for cid, (p, _) in picked.items()}

    def _final_seconds(self, schedule, probes) -> float:
        if self.budget.seconds is None:
            return 0.0
        left = self.budget.seconds - self.clock.elapsed()
        return plan.final_seconds(left, schedule, probes, self.opts.n_round, self.opts.n_final,
                                  self.opts.seeds)

    def _steps(self, pr: plan.Probe, preset: presets.Preset, schedule, final: float) -> list:
        if self.budget.flops is not None:
            return [plan.steps_for_flops(share * self.budget.flops, pr, preset.batch_size)
                    for share, _ in schedule]
        return [plan.steps_for(share * final, pr) for share, _ in schedule]

    # -- the rounds --------------------------------------------------------------------------
    def _round(self, i: int) -> None:
        schedule = self.state["plan"]["schedule"]
        last = i == len(schedule) - 1
        alive = self.state["alive"][i]
        if i > 0 and self.budget.seconds is not None and str(i) not in self.state["replans"]:
            self._replan(i)
        seeds = range(self.opts.seeds) if last else range(1)
        for cid in alive:
            for k in seeds:
                if cid in self.state["diverged"]:
                    break
                self._train(cid, k, self.state["plan"]["steps"][cid][i])
                if cid not in self.state["diverged"]:
                    self._evaluate(cid, k, i, last)
        if not last:
            ranked = sorted(alive, key=lambda c: self._kid(c, i))
            keep = ranked[:schedule[i + 1][1]]
            if len(self.state["alive"]) == i + 1:
                self.state["alive"].append(sorted(keep))
                self.save()
            stopped = [c for c in ranked if c not in keep]
            self.say(f"round {i + 1}: {', '.join(keep)} go on; stopped {', '.join(stopped)}")

    def _kid(self, cid: str, i: int) -> float:
        """Seed 0's KID in round ``i`` (infinite for a candidate whose training diverged)."""
        e = self.state["evals"].get(f"{cid}/0/{i}")
        return math.inf if e is None else e["kid"]["value"]

    def _replan(self, i: int) -> None:
        """The steps of rounds ``i`` on from the time left, at the speeds measured so far
        (each candidate's training seconds per step, the slowest evaluation per sample): the
        final length ``F`` solves time left = the rest's training in final lengths x F +
        the rest's evaluations."""
        p = self.state["plan"]
        schedule, alive = p["schedule"], self.state["alive"][i]
        rate = {c: self._step_seconds(c) for c in alive}
        # each alive candidate's own evaluation cost per sample so far, their mean for
        # rounds whose survivors are not known yet
        costs = [max(e["seconds"] / e["n"] for k, e in self.state["evals"].items()
                     if k.startswith(f"{c}/")) for c in alive
                 if any(k.startswith(f"{c}/") for k in self.state["evals"])]
        per_image = sum(costs) / len(costs) if costs else max(
            e["seconds"] / e["n"] for e in self.state["evals"].values())
        rest, evals = 0.0, 0.0
        for j in range(i, len(schedule)):
            share, count = schedule[j]
            rest += count * (share - schedule[j - 1][0])
            final = j == len(schedule) - 1
            n = self.opts.n_final if final else self.opts.n_round
            evals += count * (self.opts.seeds if final else 1) * per_image * n
        finalists = schedule[-1][1]
        evals += finalists * plan.FINAL_EXTRA_SECONDS
        starts = finalists * (self.opts.seeds - 1) * max(
            p["candidates"][c]["probe"]["first_step_seconds"] for c in alive)
        # the finalists' extra seeds train the final length from scratch
        rest += finalists * (self.opts.seeds - 1)
        left = self.budget.seconds * (1 - plan.MARGIN) - self.clock.elapsed()
        # a unit of F costs the slowest alive candidate's rate in seconds per second: 1
        f = max(0.0, (left - evals - starts - 5.0) / rest)
        for c in alive:
            steps = p["steps"][c]
            for j in range(i, len(schedule)):
                steps[j] = max(steps[j - 1], plan.steps_for(schedule[j][0] * f,
                                                            plan.Probe(rate[c], 0.0)))
        self.state["replans"][str(i)] = {"final_seconds": f, "time_left": left,
                                         "evaluation_seconds": evals}
        self.save()
        self.say(f"round {i + 1} planned from the {duration(left)} left: " + ", ".join(
            f"{c} to {p['steps'][c][i]} steps" for c in alive))

    def _step_seconds(self, cid: str) -> float:
        """Seconds per training step measured on seed 0 so far (the probe's before that)."""
        s = self.state.get("train_summary", {}).get(f"{cid}/0") or {}
        if s.get("steps") and s.get("seconds"):
            return s["seconds"] / s["steps"]
        return self.state["plan"]["candidates"][cid]["probe"]["step_seconds"]

    def seed(self, k: int) -> int:
        """The training seed of a candidate's k-th run (``--seed`` is the first)."""
        return self.opts.seed + k

    def run_dir(self, cid: str, k: int) -> Path:
        return self.out / "runs" / cid / f"seed{self.seed(k)}"

    def _train(self, cid: str, k: int, steps: int) -> None:
        name = f"{cid}/{k}"
        if self.state["trained"].get(name, 0) >= steps:
            return
        d = self.run_dir(cid, k)
        cand = self.state["plan"]["candidates"][cid]
        self.say(f"train {cid} ({cand['name']}) seed {self.seed(k)} to {steps} steps")
        options = {"steps": steps, "device": str(self.device)}
        if (d / CHECKPOINT_FILE).is_file():
            trainer = Trainer.resume(d, progress=None, data_root=self.opts.data_root, **options)
        else:
            if d.exists():
                shutil.rmtree(d)  # interrupted before its first checkpoint
            torch.manual_seed(self.seed(k))
            config = dict(cand["config"])
            if presets.CURRICULUM in registry.config_fields(cand["model"]):
                config.setdefault(presets.CURRICULUM, self.state["plan"]["steps"][cid][-1])
            model = registry.create(cand["model"], dataset=self.ds, **config)
            train = {"checkpoint_every": 200, "sample_n": 16, **cand["train"]}
            trainer = Trainer(model, self.ds, d, progress=None, data_root=self.opts.data_root,
                              batch_size=cand["batch_size"], seed=self.seed(k),
                              **options, **train)
        trainer.command = self.opts.command
        try:
            summary = trainer.fit()
        except TrainingDiverged as e:
            self.state["diverged"][cid] = f"seed {self.seed(k)}: {e}"
            self.save()
            self.say(f"{cid} diverged: {e}")
            return
        self.state["trained"][name] = summary["steps"]
        self.state.setdefault("train_summary", {})[name] = {
            k2: summary.get(k2) for k2 in ("steps", "seconds", "images_per_s")}
        self.save()

    def _evaluate(self, cid: str, k: int, i: int, final: bool) -> None:
        key = f"{cid}/{k}/{i}"
        if key in self.state["evals"]:
            return
        n = self.opts.n_final if final else self.opts.n_round
        self.say(f"evaluate {cid} seed {self.seed(k)} ({n} samples)")
        started = time.monotonic()
        grid = self.out / "grids" / f"{cid}-round{i + 1}.png" if k == 0 else None
        cand = self.state["plan"]["candidates"][cid]
        # the finalists' seeds: every figure; seed 0 also its NLL and sampling speed
        result = evaluation.evaluate_run(
            self.run_dir(cid, k), self.ref, n, grid, final=final,
            nll_options=presets.NLL_OPTIONS.get(cand["model"], {}) if final and k == 0
            else None)
        if grid is not None:
            result["grid"] = str(grid.relative_to(self.out))
        result["steps"] = self.state["trained"].get(f"{cid}/{k}")
        result["seconds"] = time.monotonic() - started
        self.state["evals"][key] = result
        self.save()
        kid = result["kid"]
        self.say(f"{cid} seed {self.seed(k)} round {i + 1}: KID {kid['value']:.4g} "
                 f"[{kid['ci95'][0]:.4g}, {kid['ci95'][1]:.4g}], "
                 f"{duration(self.clock.elapsed())} spent")

