"""The report's figures (PNG, matplotlib without pyplot: no global backend state).

Per dataset: quality vs speed (the metric registry's headline, FID, against sampling
images/s, one point per model and sampler, log x, the Pareto front drawn), the same for
each other column the registry draws against speed (``Column.figure``), the sampler
frontier (FID against network calls and images/s), FID against each "guidance" column
(class accuracy), sampling throughput against batch size, and the training curves of
``runs/<dataset>/<model>/losses.csv`` when present;
``compute_curves``: the "speed" columns (KID, FID) and NLL against training compute
(``curve.jsonl``). A quality figure is drawn with its 95% interval as an error bar where
the row has one.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from ..files import atomic_write
from ..metrics import registry as metric_registry
from .frame import records
from .rows import (
    by_dataset,
    calls,
    comparison,
    frontier_lines,
    headline,
    interval,
    label,
    pareto_front,
    per_batch,
    per_model,
    present,
    small_n,
    speed,
    speed_batch,
    variant,
)
from .schema import family_color, sampler_label, sampler_marker

LINESTYLES = ("-", "--", ":", "-.")
DPI = 120
# losses.csv columns that are not losses
NOT_LOSSES = ("step", "seconds", "images_per_s")


def _color(row: dict) -> str:
    return family_color(row.get("family"))


def _marker(row: dict) -> str:
    return sampler_marker(row)


def _column(key: str) -> metric_registry.Column:
    return metric_registry.column(key)


def _words(col: metric_registry.Column) -> str:
    """A column in words for a title: its axis label up to any parenthesis, or its label."""
    return (col.axis or col.label).split(" (")[0]


def _quality_label(rows: list[dict], name: str | None = None, direction: int = -1) -> str:
    """"FID (mnist-classifier, N = 100-2000; lower is better)": what the points were
    measured with, since FID depends on the extractor and is biased upward at small N
    (``name`` default the headline's label)."""
    name = name or _column(headline()).label
    extractors = sorted({str(r.get("extractor")) for r in rows if present(r.get("extractor"))})
    ns = sorted({int(r["n_samples"]) for r in rows if present(r.get("n_samples"))})
    parts = [", ".join(extractors)] if extractors else []
    if ns:
        parts.append(f"N = {ns[0]}" if len(ns) == 1 else f"N = {ns[0]}-{ns[-1]}")
    better = "lower is better" if direction < 0 else "higher is better"
    return f"{name} ({'; '.join(parts + [better])})"


def slug(text: str) -> str:
    """A dataset name as a file name part."""
    return re.sub(r"[^\w.-]+", "_", str(text)).strip("_") or "dataset"


def error_extents(values, intervals) -> list[list[float]]:
    """matplotlib's ``yerr`` for points ``values`` with 95% intervals ``intervals`` ((lo,
    hi) or None each): [[below each point], [above each point]], 0 where a point has no
    interval (no bar). A point outside its own interval (a percentile bootstrap can put it
    there) gets no bar on that side rather than a negative one."""
    below, above = [], []
    for v, ci in zip(values, intervals, strict=True):
        if ci is None or not (math.isfinite(ci[0]) and math.isfinite(ci[1])):
            below.append(0.0)
            above.append(0.0)
        else:
            below.append(max(float(v) - ci[0], 0.0))
            above.append(max(ci[1] - float(v), 0.0))
    return [below, above]


def _plain_ticks(ax, axis: str) -> None:
    """Log axes labelled 10, 100, 1,000 rather than 10^1, 10^2, 10^3."""
    fmt = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_formatter(fmt)
    a.set_minor_formatter(NullFormatter())


def _family_legend(rows: list[dict]) -> list[Line2D]:
    fams = dict.fromkeys(str(r.get("family")) for r in rows)
    return [Line2D([], [], color=family_color(f), marker="o", ls="", label=f) for f in fams]


def _save(fig: Figure, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=DPI,
                                               bbox_inches="tight"))
    return path


# where a point's label may go, in points from the point: right above, right below, left
# above, left below, then further out
_LABEL_SPOTS = [(7, 4, "left", "bottom"), (7, -4, "left", "top"), (-7, 4, "right", "bottom"),
                (-7, -4, "right", "top"), (7, 16, "left", "bottom"), (7, -16, "left", "top"),
                (-7, 16, "right", "bottom"), (-7, -16, "right", "top"),
                (7, 30, "left", "bottom"), (7, -30, "left", "top")]


def _place_labels(fig: Figure, ax, items: list[tuple[tuple[float, float], str]]) -> None:
    """Label points without overlapping each other or the points: for each label, the
    first spot of _LABEL_SPOTS whose box is free and inside the axes (else the first)."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    taken = []
    for xy, _ in items:  # the markers
        x, y = ax.transData.transform(xy)
        taken.append((x - 6, y - 6, x + 6, y + 6))
    frame = ax.get_window_extent(renderer)
    for xy, text in items:
        best = None
        for dx, dy, ha, va in _LABEL_SPOTS:
            ann = ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points",
                              fontsize=8, ha=ha, va=va, zorder=4,
                              bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                    "alpha": 0.75})
            bb = ann.get_window_extent(renderer)
            box = (bb.x0, bb.y0, bb.x1, bb.y1)
            inside = (bb.x0 >= frame.x0 and bb.x1 <= frame.x1 and bb.y0 >= frame.y0
                      and bb.y1 <= frame.y1)
            free = not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3]
                           for t in taken)
            if free and inside:
                if best is not None:
                    best[0].remove()
                best = (ann, box)
                break
            if best is None:
                best = (ann, box)
            else:
                ann.remove()
        taken.append(best[1])


def quality_vs_speed(ds: str, rows: list[dict], path: Path,
                     key: str | None = None) -> Path | None:
    """A quality column (default the headline, FID; its ``small_n`` stand-in, KID, where
    the rows' N differ) against sampling images/s, one point per row, the Pareto front
    drawn; log scales where the figures span over 20x."""
    key = key or headline()
    alt = small_n(key)
    key, _ = comparison([r.get("n_samples") for r in rows
                         if present(r.get(key)) or (alt and present(r.get(alt)))],
                        alt is not None and any(present(r.get(alt)) for r in rows), key)
    col = _column(key)
    bs, common = speed_batch(rows)
    pts = [(r, float(r[key]), speed(r, bs)) for r in rows if present(r.get(key))]
    pts = [(r, f, s) for r, f, s in pts if s is not None and s > 0]
    if not pts:
        return None
    fig = Figure(figsize=(9, 6))
    ax = fig.add_subplot()
    for r, f, s in pts:
        ax.errorbar([s], [f], yerr=error_extents([f], [interval(r, key)]), fmt="none",
                    ecolor=_color(r), elinewidth=1.2, capsize=3, zorder=2.5)
        ax.scatter(s, f, color=_color(r), marker=_marker(r), s=60, zorder=3,
                   edgecolor="black", linewidth=0.5)
    front = sorted((speed(r, bs), float(r[key])) for r in pareto_front(rows, bs, key))
    if len(front) > 1:
        ax.plot([s for s, _ in front], [f for _, f in front], color="gray",
                ls="--", lw=1, zorder=2)
    ax.set_xscale("log")
    fids = [f for _, f, _ in pts] + [x for r, *_ in pts for x in interval(r, key) or ()]
    if min(fids) > 0 and max(fids) / min(fids) > 20:
        ax.set_yscale("log")
        _plain_ticks(ax, "y")
        ax.set_ylim(min(fids) / 1.3, max(fids) * 1.6)  # room for the labels above the points
    else:
        span = max(max(fids) - min(fids), 0.1 * max(abs(max(fids)), 1e-6))
        ax.set_ylim(min(fids) - 0.08 * span, max(fids) + 0.15 * span)
    _plain_ticks(ax, "x")
    lo, hi = min(s for *_, s in pts), max(s for *_, s in pts)
    ax.set_xlim(lo / 1.6, hi * 4)  # room for the labels right of the points
    _place_labels(fig, ax, [((s, f), f"{r.get('model')}\n{variant(r)}") for r, f, s in pts])
    at = f"at batch size {bs}" if common else "at each row's largest batch size"
    ax.set_xlabel(f"sampling throughput {at} (images/s, log scale)")
    ax.set_ylabel(_quality_label([r for r, *_ in pts], col.label, col.direction))
    bars = "; bars: 95% intervals" if any(interval(r, key) for r, *_ in pts) else ""
    corner = "lower right" if col.direction < 0 else "upper right"
    what = "sample quality" if col.headline or _column(headline()).small_n == key \
        else col.label
    ax.set_title(f"{ds}: {what} vs sampling speed (better: {corner}{bars})")
    handles = _family_legend([r for r, *_ in pts])
    markers = {}  # sampler name -> marker, for the samplers of more than one family member
    for r, *_ in pts:
        markers.setdefault(str(r.get("sampler")), _marker(r))
    if len(set(markers.values())) > 1:
        handles += [Line2D([], [], color="black", marker=m, ls="", label=f"sampler {k}")
                    for k, m in markers.items()]
    if len(front) > 1:
        handles.append(Line2D([], [], color="gray", ls="--", label="Pareto front"))
    ax.legend(handles=handles, loc="best", fontsize=8, title="family / sampler",
              title_fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def frontier(ds: str, rows: list[dict], path: Path) -> Path | None:
    """The sampler frontier: FID against network calls per image (left) and against
    sampling images/s (right), one line per model, sampler and its other options, 95%
    intervals as error bars. Only models with rows at more than one count of calls (a
    guidance sweep at one count is no frontier); log y where FIDs span over 10x."""
    key = headline()
    lines = frontier_lines(rows)
    spread: dict[str, set] = {}
    for (model, *_), rs in lines.items():
        spread.setdefault(model, set()).update(calls(r) for r in rs)
    lines = {k: rs for k, rs in lines.items() if len(spread[k[0]]) > 1}
    if not lines:
        return None
    # the largest batch the frontier's rows were all timed at (not every row of the dataset)
    bs, _ = speed_batch([r for rs in lines.values() for r in rs])
    timed = any(speed(r, bs) for rs in lines.values() for r in rs)
    fig = Figure(figsize=(13 if timed else 8, 5.5), layout="constrained")
    axes = fig.subplots(1, 2 if timed else 1, squeeze=False)[0]
    all_calls = sorted({calls(r) for rs in lines.values() for r in rs})
    for i, rs in enumerate(lines.values()):
        # the line's label: its sampler's own label with steps left out (they are the x axis)
        unstepped = {**rs[0], "sampler_options": {**rs[0]["sampler_options"], "steps": None}}
        name = f"{rs[0].get('model')} · {sampler_label(unstepped)}"
        style = dict(marker=_marker(rs[0]), ls=LINESTYLES[i % len(LINESTYLES)], label=name,
                     color=_color(rs[0]) if len(lines) == 1 else f"C{i % 10}", capsize=3)
        ys = [float(r[key]) for r in rs]
        yerr = error_extents(ys, [interval(r, key) for r in rs])
        axes[0].errorbar([calls(r) for r in rs], ys, yerr=yerr, **style)
        if timed:
            pts = [(speed(r, bs), y, lo, hi) for r, y, lo, hi
                   in zip(rs, ys, *yerr, strict=True) if speed(r, bs)]
            if pts:
                xs, ys2, lo, hi = map(list, zip(*pts, strict=True))
                axes[1].errorbar(xs, ys2, yerr=[lo, hi], **style)
    axes[0].set_xscale("log")
    # a tick at each count of calls, the commonest first, leaving out any within 30% of one
    # already placed (heun's 19 beside everyone's 20)
    often = [calls(r) for rs in lines.values() for r in rs]
    ticks: list[int] = []
    for c in sorted(all_calls, key=lambda c: (-often.count(c), c)):
        if all(max(c, t) / min(c, t) >= 1.3 for t in ticks):
            ticks.append(c)
    axes[0].set_xticks(sorted(ticks))
    _plain_ticks(axes[0], "x")
    axes[0].set_xlabel("network calls per image (log scale)")
    if timed:
        axes[1].set_xscale("log")
        axes[1].set_xlabel("sampling images/s " + (f"at batch {bs} " if bs else "")
                           + "(log scale)")
    every = [r for rs in lines.values() for r in rs]
    fids = [float(r[key]) for r in every]
    for ax in axes:
        ax.set_ylabel(_quality_label(every))
        if min(fids) > 0 and max(fids) > 10 * min(fids):
            ax.set_yscale("log")  # one sampler far behind would flatten the others
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"{ds}: sampler frontier, {_column(key).label} against network calls" +
                 (" and against images/s" if timed else "") +
                 (" (bars: 95% intervals)" if any(interval(r, key) for r in every) else ""))
    return _save(fig, path)


def throughput_vs_batch(ds: str, rows: list[dict], path: Path) -> Path | None:
    timed = [r for r in rows if per_batch(r, "sample_images_per_s")]
    if not timed:
        return None
    fig = Figure(figsize=(9, 5.5))
    ax = fig.add_subplot()
    sizes = set()
    n_in_family: dict[str, int] = {}
    for r in timed:
        d = per_batch(r, "sample_images_per_s")
        xs = sorted(d)
        sizes.update(xs)
        fam = str(r.get("family"))
        i = n_in_family[fam] = n_in_family.get(fam, -1) + 1
        ax.plot(xs, [d[x] for x in xs], marker=_marker(r), color=_color(r),
                ls=LINESTYLES[i % len(LINESTYLES)], label=label(r))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sorted(sizes))
    _plain_ticks(ax, "x")
    _plain_ticks(ax, "y")
    ax.set_xlabel("batch size (images per sampling call, log scale)")
    ax.set_ylabel("sampling throughput (images/s, log scale)")
    ax.set_title(f"{ds}: sampling throughput against batch size")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def read_losses(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """{loss column: (steps, values)} of a losses.csv written by zoo.train."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    try:
        with path.open(newline="") as f:
            for rec in csv.DictReader(f):
                try:
                    step = float(rec.get("step") or "nan")
                except ValueError:
                    continue
                if not math.isfinite(step):
                    continue
                for k, v in rec.items():
                    if k is None or k in NOT_LOSSES:
                        continue
                    try:
                        x = float(v)
                    except (TypeError, ValueError):
                        continue
                    if math.isfinite(x):
                        xs, ys = curves.setdefault(k, ([], []))
                        xs.append(step)
                        ys.append(x)
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return curves


def training_curves(ds: str, rows: list[dict], run_dir: Path, path: Path) -> Path | None:
    runs = []
    for r in per_model(rows):
        f = run_dir / "runs" / str(r.get("dataset")) / str(r.get("model")) / "losses.csv"
        if f.is_file():
            curves = read_losses(f)
            if curves:
                runs.append((r, curves))
    if not runs:
        return None
    ncols = min(len(runs), 3)
    nrows = math.ceil(len(runs) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (r, curves) in zip(axes.flat, runs, strict=False):
        for i, (k, (xs, ys)) in enumerate(curves.items()):
            ax.plot(xs, ys, ls=LINESTYLES[(i // 10) % len(LINESTYLES)],
                    marker="." if len(xs) < 20 else None, label=k)
        ax.set_title(f"{r.get('model')} ({r.get('family')})", fontsize=10)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        steps = {x for xs, _ in curves.values() for x in xs}
        if len(steps) == 1:  # one log point: a window around it, integer ticks
            (x,) = steps
            ax.set_xlim(x - 1, x + 1)
        bpd = all(k.endswith("_bpd") for k in curves)
        ax.set_ylabel("loss (bits per dim)" if bpd else "logged value (losses, scores)")
        ys = [y for _, v in curves.values() for y in v]
        if min(ys) > 0 and max(ys) / min(ys) > 20:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.suptitle(f"{ds}: training curves (losses averaged between log points)")
    return _save(fig, path)


def fid_vs_class_accuracy(ds: str, rows: list[dict], path: Path) -> Path | None:
    """``trade_off`` of FID against class accuracy."""
    return trade_off(ds, rows, path, "class_accuracy")


def trade_off(ds: str, rows: list[dict], path: Path, key: str) -> Path | None:
    """The trade-off guidance makes: the headline (FID) against a column drawn as
    "guidance" (class accuracy), one line per model and sampler through its guidance
    values (annotated), both with their 95% intervals."""
    top, col = headline(), _column(key)
    scored = [r for r in rows if present(r.get(top)) and present(r.get(key))]
    if not scored:
        return None
    groups: dict[tuple, list[dict]] = {}
    for r in scored:
        opts = dict(r.get("sampler_options") or {})
        w = opts.pop("guidance", 1.0)
        groups.setdefault((str(r.get("model")), str(r.get("sampler")),
                           json.dumps(opts, sort_keys=True)), []).append((w, r))
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    for i, (_, pairs) in enumerate(sorted(groups.items(), key=lambda t: t[0])):
        pairs.sort(key=lambda p: p[0])
        rs = [r for _, r in pairs]
        xs = [float(r[key]) for r in rs]
        ys = [float(r[top]) for r in rs]
        name = f"{rs[0].get('model')} · {rs[0].get('sampler')}"
        ax.errorbar(xs, ys, yerr=error_extents(ys, [interval(r, top) for r in rs]),
                    xerr=error_extents(xs, [interval(r, key) for r in rs]),
                    marker=_marker(rs[0]), ls=LINESTYLES[i % len(LINESTYLES)], label=name,
                    color=_color(rs[0]), capsize=3)
        for (w, _), x, y in zip(pairs, xs, ys, strict=True):
            ax.annotate(f"w={w:g}", (x, y), textcoords="offset points", xytext=(5, 5),
                        fontsize=8)
    ax.set_xlabel(col.axis or col.label)
    ax.set_ylabel(_quality_label(scored))
    ax.set_title(f"{ds}: {_column(top).label} against {_words(col)} across guidance w "
                 "(bars: 95% intervals)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def speed_figures() -> list[metric_registry.Column]:
    """The columns drawn against sampling speed, one figure each: the headline (FID, or KID
    where N differs) first, then each other "speed" figure that stands in for none."""
    cols = metric_registry.figure_columns("speed")
    stand_ins = {c.small_n for c in cols}
    return sorted((c for c in cols if c.key not in stand_ins), key=lambda c: not c.headline)


def write_figures(rows: list[dict], run_dir: Path, fig_dir: Path) -> list[tuple[str, Path]]:
    """Write every figure the rows allow; return [(title, path)] in report order."""
    out = []
    top = _column(headline())
    for ds, ds_rows in by_dataset(rows).items():
        s = slug(ds)
        made = [
            (f"{ds}: quality vs speed", quality_vs_speed(
                ds, ds_rows, fig_dir / f"quality_vs_speed_{s}.png"))
            if c.headline else
            (f"{ds}: {c.label} vs speed", quality_vs_speed(
                ds, ds_rows, fig_dir / f"{c.key}_vs_speed_{s}.png", c.key))
            for c in speed_figures()]
        made.append((f"{ds}: sampler frontier", frontier(
            ds, ds_rows, fig_dir / f"frontier_{s}.png")))
        made += [(f"{ds}: {top.label} vs {_words(c)}", trade_off(
            ds, ds_rows, fig_dir / f"{top.key}_vs_{c.key}_{s}.png", c.key))
            for c in metric_registry.figure_columns("guidance")]
        made += [
            (f"{ds}: throughput vs batch size", throughput_vs_batch(
                ds, ds_rows, fig_dir / f"throughput_vs_batch_{s}.png")),
            (f"{ds}: training curves", training_curves(
                ds, ds_rows, run_dir, fig_dir / f"training_curves_{s}.png")),
        ]
        out += [(t, p) for t, p in made if p is not None]
    return out


def curve_panels(cdf) -> list[tuple[str, str]]:
    """(column, axis title) of the compute curves' panels that ``cdf`` has figures of: the
    "speed" figures, each stand-in for small N first (KID, then FID: the curves are
    measured at one small N), then NLL."""
    cols = metric_registry.figure_columns("speed")
    stand_ins = {c.small_n for c in cols}
    cols = sorted(cols, key=lambda c: c.key not in stand_ins)
    panels = [(c.key, f"{c.label} ({'lower' if c.direction < 0 else 'higher'} is better)")
              for c in cols] + [("nll_bpd", "NLL (bits/dim, lower is better)")]
    return [(k, t) for k, t in panels if k in cdf and cdf[k].notna().any()]


def _curve_styles(cdf) -> dict[str, tuple]:
    """{line name: (colour, line style, marker)}: the family's colour, then a style each."""
    n_in_family: dict[str, int] = {}
    styles = {}
    for name, g in cdf.groupby("name", sort=False):
        fam = str(g["family"].iloc[0])
        i = n_in_family[fam] = n_in_family.get(fam, -1) + 1
        styles[name] = (family_color(fam), LINESTYLES[i % len(LINESTYLES)], "osD^v"[i % 5])
    return styles


def _curve_panel(ax, cdf, key: str, title: str, xcol: str, styles: dict) -> bool:
    """One panel of the compute curves: a line per name with its error bars (a quality
    figure's 95% interval; NLL's 1.96 standard errors, hollow markers for bounds); True
    when it drew a bound."""
    bound_drawn = False
    for name, g in cdf.groupby("name", sort=False):
        g = g[g[key].notna() & g[xcol].notna()].sort_values(xcol)
        if not len(g):
            continue
        color, ls, marker = styles[name]
        xs, ys = g[xcol].tolist(), g[key].tolist()
        if key == "nll_bpd":
            err = [1.96 * e if e == e else 0.0 for e in g["nll_stderr"].tolist()]
            yerr = [err, err]
            bound = (g["nll_kind"] == "bound").fillna(False).tolist()
        else:
            cis = [(lo, hi) if lo == lo and hi == hi else None for lo, hi in
                   zip(g[f"{key}_ci95.lo"], g[f"{key}_ci95.hi"], strict=True)] \
                if f"{key}_ci95.lo" in g else [None] * len(ys)
            yerr = error_extents(ys, cis)
            bound = [False] * len(ys)
        ax.errorbar(xs, ys, yerr=yerr, color=color, ls=ls, marker=None, capsize=3,
                    lw=1.4, label=name)
        for x, y, b in zip(xs, ys, bound, strict=True):
            ax.plot([x], [y], marker=marker, color=color, ls="", ms=6,
                    mfc="white" if b else color, mec=color, zorder=3)
            bound_drawn = bound_drawn or b
    ax.set_xscale("log")
    # a tick at each budget fraction (its median over the models), not matplotlib's
    # crowded minor labels
    ticks = sorted(cdf.groupby("fraction")[xcol].median().dropna())
    ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training FLOPs (log scale)" if xcol == "train_flops"
                  else "training seconds (log scale)")
    shown = cdf[key].dropna()
    if key != "nll_bpd" and (shown > 0).all() and shown.max() > 10 * shown.min():
        ax.set_yscale("log")  # one model far behind would flatten the others
        title = title.replace("(lower", "(log scale, lower").replace(
            "(higher", "(log scale, higher")
    ax.set_ylabel(title)
    ax.grid(True, which="major", alpha=0.3)
    return bound_drawn


def compute_curves(ds: str, cdf, names, path: Path) -> Path | None:
    """One dataset's quality against training compute (``frame.curves`` lines, ``names``
    their curve names): a panel per ``curve_panels`` (KID, FID, then NLL in bits/dim)
    against training FLOPs (log x; training seconds when some point has no FLOPs), one
    line per model coloured by family, 95% intervals as error bars."""
    cdf = cdf.assign(name=list(names))
    flops = cdf["train_flops"].notna().all() and (cdf["train_flops"] > 0).all()
    xcol = "train_flops" if flops else "train_seconds"
    panels = curve_panels(cdf)
    if not panels or not cdf[xcol].notna().any():
        return None
    fig = Figure(figsize=(5.2 * len(panels), 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    styles = _curve_styles(cdf)
    bound_drawn = False
    for ax, (key, title) in zip(axes, panels, strict=True):
        bound_drawn = _curve_panel(ax, cdf, key, title, xcol, styles) or bound_drawn
    handles = [Line2D([], [], color=c, ls=ls, marker=m, label=n)
               for n, (c, ls, m) in styles.items()]
    if bound_drawn:
        handles.append(Line2D([], [], color="gray", marker="o", mfc="white", ls="",
                              label="NLL upper bound (hollow)"))
    fig.legend(handles=handles, loc="outside lower center", fontsize=8,
               ncols=min(len(handles), 4), title="model (colour: family)", title_fontsize=8)
    labels = [_column(k).label for k, _ in panels if k != "nll_bpd"] or ["quality"]
    what = " and ".join([", ".join(labels[:-1]), labels[-1]] if len(labels) > 1 else labels)
    measured = _quality_label(records(cdf[["extractor", "n_samples"]]), what)
    fig.suptitle(f"{ds}: sample quality against training compute; "
                 f"{measured.removesuffix('; lower is better)')}; bars: 95% intervals)")
    return _save(fig, path)
