"""The budget and the rounds of successive halving.

``--budget`` is either wall time (``15m``, ``900s``, ``1h30m``): the whole command, from
start to the written report, the extractor and the evaluations included; or training FLOPs
(``6e12``): what each finalist's training costs (every seed), the scale of the CI suite's
budget, with the rest of the work on top.

The schedule (``rounds``): successive halving over training length. Every candidate trains
for the first round's share, the better half (rounded up) continues from its checkpoint to
twice that, and so on until two finalists remain, which train to the whole final length
with ``seeds`` training seeds (seed 0 continued, the others from scratch). The final length
doubles from round to round, so each round costs about the same and the stopped candidates
have had a fair share: with five candidates the first round is a quarter of the final
length, 1.25 final lengths in all, and the finalists' extra seeds four.

Under a wall-time budget each candidate gets the same *seconds* of training per round (the
device's time is what a user spends), turned into steps by each preset's measured speed
(``Probe``) and then fixed, so a resumed run trains to the same steps; the final length is
re-planned from the time left before the final round, so the command ends on time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import ConfigError

#: training seeds of each finalist
SEEDS = 3
#: the final round's number of candidates
FINALISTS = 2
#: share of a wall-time budget held back for what the estimates miss
MARGIN = 0.06

#: a finalist's seed 0 also gets its NLL, precision/recall/density/coverage and its
#: sampling speed measured: an allowance for them, on top of its samples
FINAL_EXTRA_SECONDS = 20.0

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


@dataclass(frozen=True)
class Budget:
    seconds: float | None = None  # wall time of the whole command
    flops: float | None = None  # training FLOPs of each finalist (per seed)

    def __str__(self) -> str:
        if self.seconds is not None:
            from ..limits import duration

            return duration(self.seconds)
        return f"{self.flops:.3g} training FLOPs per finalist"


def parse_budget(text: str) -> Budget:
    """``15m``, ``900s``, ``1h30m``, ``2h`` (wall time) or ``6e12`` (training FLOPs)."""
    s = str(text).strip().lower().replace(" ", "")
    parts = re.fullmatch(r"((\d+(\.\d+)?)(h|m|min|s|sec))+", s)
    if parts:
        seconds = sum(float(v) * _UNITS[u] for v, _, u in
                      re.findall(r"(\d+(\.\d+)?)(h|min|m|sec|s)", s))
        if seconds < 60:
            raise ConfigError(f"--budget {text}: at least a minute is needed to train anything")
        return Budget(seconds=seconds)
    try:
        flops = float(s)
    except ValueError:
        flops = None
    if flops is None or not math.isfinite(flops) or flops < 1e9:
        raise ConfigError(f"--budget must be a wall time like 15m, 900s or 1h30m, or training "
                          f"FLOPs per finalist like 6e12; got {text!r}")
    return Budget(flops=flops)


def rounds(n: int, least_share: float = 0.0) -> list[tuple[float, int]]:
    """(share of the final training length, candidates) of each round: halving (rounded up)
    until ``FINALISTS`` remain, the shares doubling up to 1. No round is shorter than
    ``least_share`` (the share at which every candidate has had the steps it needs to be
    judged): a round raised to the next one's share is merged into it, so that round
    stops more than half of its candidates at once."""
    if n < 1:
        raise ConfigError("no candidates to choose from")
    counts = [n]
    while counts[-1] > FINALISTS:
        counts.append(math.ceil(counts[-1] / 2))
    last = len(counts) - 1
    out: list[tuple[float, int]] = []
    for i, c in enumerate(counts):
        share = min(1.0, max(2.0 ** (i - last), least_share))
        if out and out[-1][0] >= share:
            continue  # as long as the round before: merged into it
        out.append((share, c))
    if out[-1][0] < 1.0:  # the final round always trains the whole length
        out.append((1.0, counts[-1]))
    return out


def training_units(schedule: list[tuple[float, int]], seeds: int = SEEDS) -> float:
    """Training in final lengths: every round's increments, and the finalists' extra seeds
    trained from scratch to the final length."""
    total, before = 0.0, 0.0
    for share, count in schedule:
        total += count * (share - before)
        before = share
    return total + schedule[-1][1] * (seeds - 1)


@dataclass(frozen=True)
class Probe:
    """One preset's measured speed on the device: seconds per training step (after the
    first), seconds per generated image with its default sampler, seconds of its first
    step (compilation, allocation), and its training FLOPs per image (None: not counted)."""

    step_seconds: float
    image_seconds: float
    first_step_seconds: float = 0.0
    flops_per_image: float | None = None


def evaluation_seconds(probe: Probe, n: int, fixed: float = 2.0) -> float:
    """An estimate of one evaluation: drawing ``n`` images and scoring them."""
    return probe.image_seconds * n + fixed


def final_seconds(budget_left: float, schedule, probes: list[Probe], n_round: int,
                  n_final: int, seeds: int = SEEDS, report_seconds: float = 5.0) -> float:
    """The final training length (seconds per candidate and seed) that spends
    ``budget_left`` on the whole schedule with every candidate's evaluations (each round
    at ``n_round`` images, the finalists' seeds at ``n_final``), held back ``MARGIN``."""
    # the rounds' survivors are not known yet: each round's evaluations at the mean cost of
    # one, the first round's at every candidate's own
    mean_round = sum(evaluation_seconds(p, n_round) for p in probes) / len(probes)
    mean_final = sum(evaluation_seconds(p, n_final) for p in probes) / len(probes)
    evals = sum(evaluation_seconds(p, n_round) for p in probes) if len(schedule) > 1 else 0.0
    evals += sum(count for _, count in schedule[1:-1]) * mean_round
    evals += schedule[-1][1] * (seeds * mean_final + FINAL_EXTRA_SECONDS)
    starts = sum(p.first_step_seconds for p in probes) + schedule[-1][1] * (seeds - 1) * max(
        p.first_step_seconds for p in probes)
    left = budget_left * (1 - MARGIN) - evals - starts - report_seconds
    units = training_units(schedule, seeds)
    if left <= 0:
        return 0.0
    return left / units


def steps_for(seconds: float, probe: Probe) -> int:
    """Training steps that take ``seconds`` at the probe's speed (at least 1)."""
    return max(1, int(seconds / probe.step_seconds))


def steps_for_flops(flops: float, probe: Probe, batch_size: int) -> int:
    """Training steps whose images cost ``flops`` (the CI suite's rule)."""
    if not probe.flops_per_image:
        raise ConfigError("a FLOPs budget needs the model's training FLOPs, which could not "
                          "be counted; give the budget as wall time instead")
    return max(1, math.ceil(flops / (probe.flops_per_image * batch_size)))
