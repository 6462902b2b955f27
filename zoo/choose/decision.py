"""What a tournament says: the recommendation per criterion with how sure it is, the flags
that keep a candidate from being ranked silently, and the Pareto front.

Sample quality is decided on KID (unbiased at any N, so the rounds' N = 500 and the final
N = 1000 measure the same quantity; FID is reported beside it): the finalists' two-level
replicates (``scores``) give the probability each is best and the paired difference to the
runner-up, a tie where that difference's 95% interval holds 0.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..bench import seeds
from ..runs import LOSSES_FILE
from . import scores

#: the seed of the joint replicates (``zoo.bench.seeds.combine``), the same for every
#: finalist: their sampling draws paired
DRAW_SEED = 0

#: recall below this: the samples cover almost none of the data (collapsed)
COLLAPSED_RECALL = 0.05
#: the loss fell by more than this share over the last fifth of training: still learning
STILL_FALLING = 0.05
#: loss columns that are not a measure of progress (adversarial games)
_ADVERSARIAL = ("gan",)


def finalists(state: dict) -> list[str]:
    """The last round's candidates that have an evaluation (not diverged)."""
    i = last_round(state)
    return [c for c in state["alive"][-1] if f"{c}/0/{i}" in state["evals"]]


def last_round(state: dict) -> int:
    return len(state["plan"]["schedule"]) - 1


def seed_evals(state: dict, cid: str) -> list[dict]:
    i, k = last_round(state), state["args"]["seeds"]
    return [state["evals"][f"{cid}/{s}/{i}"] for s in range(k)
            if f"{cid}/{s}/{i}" in state["evals"]]


def mean_figure(evals: list[dict], name: str) -> float | None:
    vals = [e[name]["value"] if isinstance(e.get(name), dict) else e.get(name) for e in evals]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return float(np.mean(vals)) if vals else None


def quality(state: dict, figure: str = "kid") -> dict:
    """Per finalist: mean over seeds, its combined interval (``zoo.bench.seeds``: seeds and
    samples), per-seed values; the probability of being best; the winner, runner-up and
    their paired difference (the same sampling draws for both)."""
    names = finalists(state)
    values = {c: [e[figure]["value"] for e in seed_evals(state, c)] for c in names}
    joint = {c: seeds.combine(values[c], [e[figure]["draws"] for e in seed_evals(state, c)],
                              DRAW_SEED, c) for c in names}
    out = {"figure": figure, "candidates": {}}
    for c, (m, reps) in joint.items():
        out["candidates"][c] = {"mean": m, "ci95": seeds.percentile_interval(reps, centre=m),
                                "seeds": values[c]}
    p = seeds.prob_best({c: reps for c, (_, reps) in joint.items()}, lower_is_better=True)
    wins = scores.seed_wins(values)
    for c in names:
        out["candidates"][c].update(prob_best=p[c], seed_wins=wins[c])
    ranked = sorted(names, key=lambda c: joint[c][0])
    out["winner"] = ranked[0]
    if len(ranked) > 1:
        (ma, ra), (mb, rb) = joint[ranked[0]], joint[ranked[1]]
        ci = seeds.percentile_interval(ra - rb, centre=ma - mb)
        out.update(runner_up=ranked[1], difference=ma - mb, difference_ci95=ci,
                   tie=ci[0] <= 0 <= ci[1])
    return out


def loss_trend(run_dir: Path) -> float | None:
    """The relative fall of the first loss column over the last fifth of the logged steps
    (mean of the last tenth against the tenth before the last fifth); None: too short."""
    path = run_dir / LOSSES_FILE
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) < 10:
        return None
    col = [k for k in rows[0] if k not in ("step", "seconds", "images_per_s")][:1]
    if not col:
        return None
    vals = [float(r[col[0]]) for r in rows if r.get(col[0]) not in (None, "")]
    n = len(vals)
    tenth = max(1, n // 10)
    before = np.mean(vals[n - 3 * tenth:n - 2 * tenth])
    after = np.mean(vals[n - tenth:])
    if not (math.isfinite(before) and math.isfinite(after)) or before == 0:
        return None
    return float((before - after) / abs(before))


def flags(state: dict, out: Path) -> dict[str, list[str]]:
    """{candidate: [flag, ...]}: collapsed samples, a loss still falling fast at the end,
    quality still improving fast between the last two rounds it ran."""
    found: dict[str, list[str]] = {}
    cands = state["plan"]["candidates"]
    for cid in cands:
        mine = []
        evals = {int(k.split("/")[2]): v for k, v in state["evals"].items()
                 if k.startswith(f"{cid}/0/")}
        if not evals:
            continue
        last = max(evals)
        rec = evals[last].get("recall")
        if rec is not None and rec < COLLAPSED_RECALL:
            mine.append(f"collapsed: recall {rec:.3f} (< {COLLAPSED_RECALL}): its samples "
                        "cover almost none of the data")
        if cands[cid]["model"].split("-")[0] not in _ADVERSARIAL:
            fall = loss_trend(out / "runs" / cid / f"seed{state['args'].get('seed', 0)}")
            if fall is not None and fall > STILL_FALLING:
                mine.append(f"still learning: its loss fell {100 * fall:.0f}% over the last "
                            "fifth of training; a longer budget may rank it higher")
        if last > 0 and last - 1 in evals:
            a, b = evals[last - 1]["kid"], evals[last]["kid"]
            if b["ci95"][1] < a["ci95"][0] and b["value"] < 0.75 * a["value"]:
                mine.append(f"still improving: KID {a['value']:.3g} -> {b['value']:.3g} "
                            "when its training doubled")
        if mine:
            found[cid] = mine
    return found


def pareto(points: dict[str, tuple[float, float]]) -> list[str]:
    """The candidates no other beats on both (KID lower, images/s higher)."""
    front = []
    for c, (q, s) in points.items():
        if not any((q2 <= q and s2 >= s) and (q2 < q or s2 > s)
                   for c2, (q2, s2) in points.items() if c2 != c):
            front.append(c)
    return sorted(front, key=lambda c: points[c][0])


def recommend(state: dict, out: Path) -> dict | None:
    """Everything the report's first screen says; None when no finalist has a figure
    (every one diverged)."""
    if not finalists(state):
        return None
    q = quality(state, "kid")
    fid = quality(state, "fid")
    cands = state["plan"]["candidates"]
    fl = flags(state, out)
    first = {c: seed_evals(state, c)[0] for c in finalists(state)}
    nll = {c: (e["nll_bpd"], e.get("nll_stderr"), e.get("nll_kind")) for c, e in first.items()
           if e.get("nll_bpd") is not None}
    speed = {c: e.get("sample_images_per_s") for c, e in first.items()}
    train_speed = {c: (state.get("train_summary", {}).get(f"{c}/0") or {}).get("images_per_s")
                   for c in finalists(state)}
    winner = q["winner"]
    w = q["candidates"][winner]
    # sampling speed at the winner's quality: the fastest finalist whose KID is not clearly
    # worse than the winner's (the winner itself, or a tie)
    tied = [winner] + ([q["runner_up"]] if q.get("tie") else [])
    fastest = max(tied, key=lambda c: speed.get(c) or 0)
    points = {c: (q["candidates"][c]["mean"], speed[c]) for c in finalists(state)
              if speed.get(c)}
    return {"quality": q, "fid": fid, "flags": fl, "nll": nll, "speed": speed,
            "train_speed": train_speed, "winner": winner, "winner_preset": cands[winner]["name"],
            "prob_best": w["prob_best"], "fastest_at_quality": fastest,
            "pareto": pareto(points)}
