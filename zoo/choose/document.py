"""The decision report: ``OUT/report.md`` and a self-contained ``OUT/report.html``, the
recommendation on the first screen, then the evidence (finalists per seed, the rounds, the
left-out candidates, sample grids) and the command that reproduces it."""

from __future__ import annotations

from pathlib import Path

from ..bench.document import Heading, Image, Items, Para, Table, to_html, to_markdown
from ..files import atomic_write
from . import decision


def _f(v, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}"


def _ci(ci) -> str:
    return f"[{_f(ci[0])}, {_f(ci[1])}]"


def headline(state: dict, rec: dict | None) -> list[str]:
    """The recommendation, one line per criterion."""
    if rec is None:
        return ["No recommendation: the training of every finalist diverged ("
                + "; ".join(f"{c}: {why}" for c, why in state["diverged"].items()) + ")"]
    q = rec["quality"]
    plan = state["plan"]
    cands = plan["candidates"]
    k = state["args"]["seeds"]
    data = state["args"]["data"]
    win = rec["winner"]
    collapsed = {c for c, fl in rec["flags"].items() if any(f.startswith("collapsed") for f in fl)}
    pick, caveat = win, None
    if win in collapsed:
        others = [x for x in sorted(q["candidates"], key=lambda x: q["candidates"][x]["mean"])
                  if x not in collapsed]
        if others:
            pick = others[0]
            caveat = (f"{win} has the best KID but its samples are collapsed (see Flags), so "
                      f"the recommendation is the best finalist whose samples are not")
        else:
            caveat = ("Every finalist's samples are collapsed (see Flags): the budget is too "
                      "small for any family to cover the data, so this ranking says little; "
                      "give a larger budget")
    c = q["candidates"][pick]
    line = (f"**For {data} at {plan['budget']} on {plan['device']}: use {pick} "
            f"({cands[pick]['name']})** — best KID in {c['seed_wins']} of {k} seeds; "
            f"probability it is best {c['prob_best']:.2f} (bootstrap over seeds and samples)")
    if q.get("runner_up") and pick == win:
        d, ci = q["difference"], q["difference_ci95"]
        verdict = ("a tie: the difference's 95% interval holds 0" if q["tie"]
                   else "behind: the difference's 95% interval excludes 0")
        line += f"; runner-up {q['runner_up']}: KID difference {_f(d)} {_ci(ci)}, {verdict}"
    lines = [line] + ([caveat] if caveat else [])
    if rec["nll"]:
        best = min(rec["nll"], key=lambda x: rec["nll"][x][0])
        v, se, kind = rec["nll"][best]
        kinds = {rec["nll"][x][2] for x in rec["nll"]}
        note = "" if kinds == {"exact"} else (" (bounds are upper bounds: a bound is not "
                                              "an exact value, compare with care)")
        others = ", ".join(f"{x} {rec['nll'][x][0]:.3f} ({rec['nll'][x][2]})"
                           for x in rec["nll"] if x != best)
        lines.append(f"Likelihood: {best}, {v:.3f} ± {1.96 * (se or 0):.3f} bits/dim "
                     f"({kind}){note}" + (f"; {others}" if others else ""))
    else:
        lines.append("Likelihood: no finalist has one")
    fast = rec["fastest_at_quality"]
    lines.append(f"Sampling speed at the winner's quality: {fast}, "
                 f"{_f(rec['speed'].get(fast), 3)} images/s at batch 64 on {plan['device']}")
    ts = {c: v for c, v in rec["train_speed"].items() if v}
    if ts:
        best = max(ts, key=ts.get)
        lines.append("Training speed: " + ", ".join(
            f"{c} {ts[c]:.0f} images/s" for c in sorted(ts, key=ts.get, reverse=True))
            + f" (fastest: {best})")
    lines.append("Pareto front (KID against images/s): " + ", ".join(rec["pareto"]))
    return lines


def blocks(state: dict, rec: dict) -> list:
    plan = state["plan"]
    cands = plan["candidates"]
    k = state["args"]["seeds"]
    out = [Heading(1, f"zoo choose: {state['args']['data']}"),
           Items([(0, line) for line in headline(state, rec)])]
    if rec is None:
        return out + rounds_section(state)
    if rec["flags"]:
        out += [Heading(2, "Flags"),
                Items([(0, f"{c}: {f}") for c, fl in rec["flags"].items() for f in fl])]
    q, fid = rec["quality"], rec["fid"]
    rows = []
    for c in decision.finalists(state):
        e0 = decision.seed_evals(state, c)[0]
        qc, fc = q["candidates"][c], fid["candidates"][c]
        rows.append([c, cands[c]["name"], f"{_f(qc['mean'])} {_ci(qc['ci95'])}",
                     ", ".join(_f(v) for v in qc["seeds"]), f"{qc['prob_best']:.2f}",
                     f"{_f(fc['mean'], 3)} {_ci(fc['ci95'])}",
                     _f(e0.get("precision"), 3), _f(e0.get("recall"), 3),
                     _f(e0.get("class_accuracy"), 3) if "class_accuracy" in e0 else "n/a",
                     str(state["plan"]["steps"][c][-1])])
    out += [Heading(2, "Finalists"),
            Para(f"Each finalist trained with {k} seeds to the same steps; KID and FID with "
                 "95% intervals over training seeds and samples (a two-level bootstrap); "
                 f"N = {state['args']['n_final']} samples per seed, extractor "
                 f"{state['extractor']['extractor']}. Precision, recall and class accuracy "
                 f"of seed {state['args'].get('seed', 0)}."),
            Table(["candidate", "preset", "KID [95%]", "KID per seed", "P(best)", "FID [95%]",
                   "precision", "recall", "class acc.", "steps"], rows)]
    out += rounds_section(state)
    grids = [(c, e["grid"]) for key, e in sorted(state["evals"].items())
             if (c := key.split("/")[0]) and e.get("grid")]
    last = {}
    for c, g in grids:
        last[c] = g  # the latest round's grid of each candidate
    out += [Heading(2, "Samples")]
    out += [Image(f"{c}: its last round's samples (seed {state['args'].get('seed', 0)})", g)
            for c, g in last.items()]
    out += [Heading(2, "Reproduce"),
            Para(f"`{state.get('command') or 'zoo choose ...'}`; every run is an ordinary run "
                 "directory under runs/ (`zoo sample`, `zoo eval` work on it).")]
    return out


def rounds_section(state: dict) -> list:
    plan = state["plan"]
    cands = plan["candidates"]
    sched = plan["schedule"]
    head = ["candidate", "preset", "why this preset"] + [
        f"round {i + 1} ({share:g} of final)" for i, (share, _) in enumerate(sched)]
    rows = []
    for c in sorted(cands):
        row = [c, cands[c]["name"], cands[c]["why"]]
        for i in range(len(sched)):
            e = state["evals"].get(f"{c}/0/{i}")
            if e:
                row.append(f"KID {_f(e['kid']['value'])} {_ci(e['kid']['ci95'])}, "
                           f"{plan['steps'][c][i]} steps")
            else:
                row.append("diverged" if c in state.get("diverged", {}) and c in
                           state["alive"][i] else "stopped")
        rows.append(row)
    left = state.get("left_out") or {}
    out = [Heading(2, "Rounds"),
           Para("Successive halving: every candidate trains the first round's share, the "
                f"better half by KID (seed {state['args'].get('seed', 0)}) continues from its "
                "checkpoint to twice that, "
                "until two finalists remain. Each candidate gets the same training time per "
                "round (its steps from its measured speed) under a time budget, the same "
                "FLOPs under a FLOPs budget."),
           Table(head, rows)]
    if left:
        out += [Heading(2, "Left out"), Items([(0, f"{m}: {why}") for m, why in left.items()])]
    return out


def write(state: dict, out: Path) -> Path:
    """report.md and report.html in ``out``; returns the HTML's path."""
    rec = decision.recommend(state, out)
    state["recommendation"] = rec and {k: rec[k] for k in (
        "winner", "winner_preset", "prob_best", "fastest_at_quality", "pareto")}
    b = blocks(state, rec)
    md = to_markdown(b)
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(md))
    page = to_html(b, out, f"zoo choose {state['args']['data']}")
    atomic_write(out / "report.html", lambda tmp: Path(tmp).write_text(page))
    return out / "report.html"
