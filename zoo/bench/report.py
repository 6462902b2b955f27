"""``zoo report DIR``: turn ``DIR/results.jsonl`` into ``results.csv``, ``report.md``,
``report.html`` and figures (``DIR/figures/*.png``).

Everything in the report is computed from the rows: the summary that opens it (per dataset,
the best model on each axis and the quality-vs-speed Pareto front), one table per dataset,
the environment the rows were measured in, the sample grids and the figures. A figure that
does not exist for a row is ``n/a``, never 0.

The report is built once, as a list of blocks (``zoo.bench.document``: headings, paragraphs,
tables, images, lists) whose text holds every formatted figure; ``report.md`` and the
self-contained ``report.html`` are two renderings of the same blocks.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from urllib.parse import quote

from .. import markup
from ..core import ConfigError, atomic_write
from ..metrics import registry as metric_registry
from ..metrics import validity_card
from . import frame
from .document import Block, Heading, Image, Items, Para, Table, to_html, to_markdown
from .rows import (
    NA,
    RESULTS_FILE,
    aggregated,
    by_dataset,
    calls,
    comparison,
    fmt,
    fmt_ci,
    fmt_nll,
    fmt_params,
    fmt_pm,
    frontier_lines,
    headline,
    interval,
    label,
    pareto,
    present,
    read_results,
    small_n,
    speed,
    speed_batch,
    variant,
)

CSV_FILE = "results.csv"
REPORT_FILE = "report.md"
HTML_FILE = "report.html"
FIGURES_DIR = "figures"


# ----------------------------------------------------------------------------- results.csv


def write_csv(rows: list[dict], path: Path) -> Path:
    """results.csv: the DataFrame of the rows (``frame.frame``, what ``zoo.bench.results``
    returns), column for column; a figure that does not exist is an empty cell."""
    df = frame.frame(rows)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(df.columns)
            for values in df.itertuples(index=False, name=None):
                w.writerow([frame.cell(v) for v in values])

    atomic_write(path, write)
    return path


# ----------------------------------------------------------------------------- the report


def _label(rec: dict) -> str:
    return markup.text(f"{rec.get('model')} · {rec.get(frame.LABEL)}")


def _sizes(df, column: str = "sample_images_per_s") -> list[int]:
    """The batch sizes of a per-batch column that some line of ``df`` has a figure at."""
    return sorted(int(c.split("@")[1]) for c in df.columns
                  if c.startswith(column + "@") and df[c].notna().any())


def _speed(rec: dict, bs: int | None, sizes: list[int]) -> float | None:
    """A record's sampling images/s at batch ``bs`` (its largest batch when None)."""
    if bs is not None:
        return rec.get(f"sample_images_per_s@{bs}")
    timed = [b for b in sizes if present(rec.get(f"sample_images_per_s@{b}"))]
    return rec[f"sample_images_per_s@{max(timed)}"] if timed else None


def _speed_batch(df) -> tuple[int | None, bool]:
    """The largest batch every timed line of ``df`` has a speed at, (bs, True); (None,
    False) when there is none in common (each line is taken at its own largest batch)."""
    sizes = _sizes(df)
    if not sizes:
        return None, False
    cols = [f"sample_images_per_s@{b}" for b in sizes]
    timed = df[df[cols].notna().any(axis=1)]
    common = [b for b, c in zip(sizes, cols, strict=True) if timed[c].notna().all()]
    return (max(common), True) if common else (None, False)


def _quality_keys() -> list[str]:
    """The headline column (FID) and its small-N stand-in (KID) when it has one."""
    return [k for k in (headline(), small_n()) if k]


def _name(key: str) -> str:
    return metric_registry.column(key).label


def _better(key: str) -> str:
    return "lower is better" if metric_registry.column(key).direction < 0 else "higher is better"


def sample_sizes(df) -> list[int]:
    """The distinct N (generated samples) of the lines of ``df`` that have a quality
    figure (the headline or its small-N stand-in), ascending."""
    scored = df
    keys = _quality_keys()
    if all(k in df for k in keys):
        scored = df[df[keys].notna().any(axis=1)]
    return sorted({int(n) for n in scored["n_samples"].dropna()}) if "n_samples" in df else []


def comparison_figure(df) -> tuple[str, str | None]:
    """``rows.comparison`` of the lines of ``df``: KID when their N differ, else FID."""
    alt = small_n()
    return comparison(sample_sizes(df), alt is not None and alt in df
                      and bool(df[alt].notna().any()))


def same_n_note(df) -> list[Block]:
    """A line under a table whose rows were measured at different N, naming the Ns."""
    ns = sample_sizes(df)
    if len(ns) < 2:
        return []
    name, alt = _name(headline()), small_n()
    return [Para(f"The rows of this table were measured at different N (generated samples: "
            f"{', '.join(f'{n:,}' for n in ns)}); {name} is biased upward at small N, so "
            f"compare {name} only between rows of the same N."
            + (f" {_name(alt)} is unbiased at any N." if alt else ""))]


def summary(df, datasets: list[str] | None = None) -> list[Block]:
    """The opening of report.md, from the rows' DataFrame (``frame.frame``): per dataset
    (in the order of ``datasets``), the best model on each axis and the Pareto front of
    quality against sampling speed."""
    out: list[Block] = [Heading(2, "Summary")]
    datasets = datasets or list(dict.fromkeys(df["dataset"]))
    keys = _quality_keys()
    out.append(Para(
        f"Computed from the {len(df)} rows of `{RESULTS_FILE}` "
        f"({len(datasets)} dataset{'s' if len(datasets) != 1 else ''}). "
        f"{' and '.join(_name(k) for k in keys)}: {_better(keys[0])}"
        ", with 95% bootstrap intervals `[lo, hi]` where measured; "
        "NLL in bits per dimension on the test split, lower is better (exact, or an upper "
        "bound; `±` its standard error); speeds in images/s, higher is better."
    ))
    for ds in datasets:
        out += [Heading(3, markup.text(ds)), *_dataset_summary(df[df["dataset"] == ds])]
    return out


def _best(recs: list[dict], key: str) -> dict:
    """The record best on ``key`` in its column's direction (the first on a tie)."""
    if metric_registry.column(key).direction > 0:
        return max(recs, key=lambda r: r[key])
    return min(recs, key=lambda r: r[key])


def _dataset_summary(sub) -> list[Block]:
    """One dataset's summary: the best on each axis, the NLL note, the Pareto front."""
    recs = frame.records(sub)
    key, why = comparison_figure(sub)
    name = _name(key)
    lead = "lowest" if metric_registry.column(key).direction < 0 else "highest"
    table: list[list[str]] = []
    scored = [r for r in recs if present(r.get(key))]
    if scored:
        b = _best(scored, key)
        table.append([f"sample quality: {lead} {name}", _label(b),
                      f"{name} {fmt_ci(b[key], *(interval(b, key) or ()))}"])
    else:
        table.append([f"sample quality: {lead} {name}", NA, f"no row has a {name}"])
    models = frame.records(sub.drop_duplicates("model"))
    nll_rows = [r for r in models if present(r.get("nll_bpd"))]
    kinds = sorted({r.get("nll_kind") or "?" for r in nll_rows},
                   key=lambda k: (k != "exact", k != "bound", k))
    table += _nll_lines(nll_rows, kinds)
    bs, common = _speed_batch(sub)
    sizes = _sizes(sub)
    at = f"at batch {bs}" if common else "at each row's largest batch (none in common)"
    table += _speed_lines(recs, models, bs, sizes, at)
    out: list[Block] = [Table(["axis", "best", "figure"], table)]
    if why:
        out.append(Para(why))
    out += _nll_note(nll_rows, kinds)
    front = pareto([(r, r[key] if metric_registry.column(key).direction < 0 else -r[key],
                     _speed(r, bs, sizes)) for r in scored if present(_speed(r, bs, sizes))])
    if front:
        out.append(Para(
            f"Pareto front of quality against sampling speed ({name} vs images/s {at}; no "
            f"other row has both a {'lower' if lead == 'lowest' else 'higher'} {name} and a "
            f"higher speed), best {name} first:"))
        out.append(Items([
            (0, f"{_label(r)}: {name} {fmt_ci(r[key], *(interval(r, key) or ()))}"
                f", {fmt(_speed(r, bs, sizes))} images/s") for r in front]))
    else:
        out.append(Para(f"Pareto front: n/a (no row has both a {name} and a sampling "
                        "speed)."))
    return out


def _nll_lines(nll_rows: list[dict], kinds: list[str]) -> list[list[str]]:
    """The summary's likelihood lines: the lowest NLL of each kind (exact, bound)."""
    lines = []
    for kind in kinds:
        b = min((r for r in nll_rows if (r.get("nll_kind") or "?") == kind),
                key=lambda r: r["nll_bpd"])
        what = markup.text({"exact": "exact", "bound": "upper bound"}.get(kind, kind))
        lines.append([f"likelihood: lowest NLL ({what})", markup.text(b["model"]),
                      fmt_nll(b, " bpd")])
    if not nll_rows:
        lines.append(["likelihood: lowest NLL", NA, "no model has an NLL"])
    return lines


def _speed_lines(recs: list[dict], models: list[dict], bs, sizes, at: str) -> list[list[str]]:
    """The summary's speed lines: the fastest sampling row and training model."""
    lines = []
    fast = [r for r in recs if present(_speed(r, bs, sizes))]
    if fast:
        b = max(fast, key=lambda r: _speed(r, bs, sizes))
        lines.append([f"sampling speed {at}", _label(b),
                      f"{fmt(_speed(b, bs, sizes))} images/s"])
    else:
        lines.append(["sampling speed", NA, "no row was timed"])
    trained = [r for r in models if present(r.get("train_images_per_s"))]
    if trained:
        b = max(trained, key=lambda r: r["train_images_per_s"])
        lines.append(["training speed", markup.text(b["model"]),
                      f"{fmt(b['train_images_per_s'])} images/s"])
    else:
        lines.append(["training speed", NA, "no model has a training speed"])
    return lines


def _nll_note(nll_rows: list[dict], kinds: list[str]) -> list[Block]:
    """Which model has the lowest NLL overall, when exact figures and bounds are mixed."""
    if not (len(kinds) > 1 and "bound" in kinds):
        return []
    best = min(nll_rows, key=lambda r: r["nll_bpd"])
    if best.get("nll_kind") == "bound":
        return [Para(f"Lowest NLL overall: {markup.text(best['model'])} (its upper bound is "
                     "below every exact figure, so it ranks first for certain).")]
    return [Para(f"Lowest NLL overall: {markup.text(best['model'])} "
                 f"({markup.text(best.get('nll_kind'))}); a bound is "
                 "only an upper bound, so a model whose bound is higher may still have a "
                 "lower true NLL.")]


def quality_columns(df) -> list[metric_registry.Column]:
    """The registry's table columns (a spread goes beside its figure) of the default metrics
    and of any other metric a line of ``df`` has a figure of."""
    shown = [m for m in metric_registry.names()
             if metric_registry.get(m).default
             or any(c.key in df and df[c.key].notna().any()
                    for c in metric_registry.columns(m))]
    return [c for c in metric_registry.columns(shown) if c.label]


def quality_cell(rec: dict, column: metric_registry.Column) -> str:
    """A quality figure with its 95% interval, or ``± spread`` when it has no interval but
    a spread (rows written before intervals), or alone."""
    v = rec.get(column.key)
    ci = interval(rec, column.key)
    if ci is not None:
        return fmt_ci(v, *ci)
    return fmt_pm(v, rec.get(column.spread) if column.spread else None)


def dataset_table(df) -> list[Block]:
    """The results table of one dataset's lines of the rows' DataFrame (``frame.frame``),
    with the same-N note under it when the lines' N differ."""
    sizes = _sizes(df)
    quality = quality_columns(df)
    head = ["model", "family", "sampler", "params", "N", *[c.label for c in quality],
            "NLL bpd", *[f"sample img/s @{bs}" for bs in sizes],
            "latency ms p50 / p95", "train steps", "train s", "train img/s", "peak mem MB"]
    p50_sizes = _sizes(df, "latency_ms_p50")
    body = []
    for r in frame.records(df):
        lbs = r.get("latency_batch_size")
        if not present(r.get(f"latency_ms_p50@{lbs}")):
            there = [b for b in p50_sizes if present(r.get(f"latency_ms_p50@{b}"))]
            lbs = max(there) if there else None
        lat = NA if lbs is None else (f"{fmt(r.get(f'latency_ms_p50@{lbs}'))} / "
                                      f"{fmt(r.get(f'latency_ms_p95@{lbs}'))} @{lbs}")
        body.append([markup.text(r.get("model")), markup.text(r.get("family") or NA),
                     markup.text(r.get(frame.LABEL)),
                     fmt_params(r.get("params")), fmt(r.get("n_samples")),
                     *[quality_cell(r, c) for c in quality], fmt_nll(r),
                     *[fmt(r.get(f"sample_images_per_s@{bs}")) for bs in sizes], lat,
                     fmt(r.get("train_steps")), fmt(r.get("train_seconds")),
                     fmt(r.get("train_images_per_s")), fmt(r.get("peak_mem_mb"))])
    return [Table(head, body), *same_n_note(df), *collapse_notes(df)]


def collapse_notes(df) -> list[Block]:
    """A warning under the table for each line whose samples collapsed within a class
    (``metrics.registry.collapse_warning``: ``diversity_min`` below its threshold)."""
    items = [(0, f"warning: {markup.text(r.get('model'))} {markup.text(r.get(frame.LABEL))}: "
                 f"{markup.text(note)}")
             for r in frame.records(df) if (note := metric_registry.collapse_warning(r))]
    return [Items(items)] if items else []


# ----------------------------------------------------------------------------- reconstruction


def _flops(v) -> str:
    return f"{v:.3g}" if present(v) else NA


def _sum(*vs):
    return sum(vs) if all(present(v) for v in vs) else None


def reconstruction_table(df) -> list[Block]:
    """One line per model of a dataset's lines (``frame.frame``) that has reconstruction
    figures: its autoencoder, PSNR and rFID with their intervals, a VQ-VAE's codebook use,
    and the training compute of both stages. Empty when no line has them."""
    if "recon_psnr" not in df or not df["recon_psnr"].notna().any():
        return []
    head = ["model", "autoencoder", "N", "PSNR dB", "rFID", "codebook perplexity / size",
            "dead codes", "autoencoder train FLOPs", "autoencoder train s",
            "second stage train FLOPs", "second stage train s", "total train FLOPs",
            "total train s"]
    body = []
    for r in frame.records(df[df["recon_psnr"].notna()].drop_duplicates("model")):
        own_flops, own_s = r.get("train_flops"), r.get("train_seconds")
        latent = present(r.get("autoencoder")) or present(r.get("autoencoder_params"))
        if latent:  # a second stage: its autoencoder's training is in addition to its own
            ae = markup.text(r.get("autoencoder") or NA)
            stage1 = (r.get("autoencoder_train_flops"), r.get("autoencoder_train_seconds"))
            stage2 = (own_flops, own_s)
        else:  # the autoencoder itself: one stage
            ae, stage1, stage2 = "itself", (own_flops, own_s), (None, None)
        size = r.get("codebook_size")
        book = (f"{fmt(r.get('codebook_perplexity'))} / {fmt(size)}" if present(size) else NA)
        total = ((_sum(stage1[0], stage2[0]), _sum(stage1[1], stage2[1])) if latent
                 else stage1)
        body.append([markup.text(r.get("model")), ae, fmt(r.get("recon_n")),
                     fmt_ci(r.get("recon_psnr"), *(interval(r, "recon_psnr") or ())),
                     fmt_ci(r.get("recon_fid"), *(interval(r, "recon_fid") or ())), book,
                     fmt(r.get("dead_codes")), _flops(stage1[0]), fmt(stage1[1]),
                     _flops(stage2[0]), fmt(stage2[1]), _flops(total[0]), fmt(total[1])])
    return [Table(head, body)]


# ----------------------------------------------------------------------------- frontier


def frontier_table(rows: list[dict]) -> list[Block]:
    """Per model with several sampler rows that count network calls: the rows by calls, the
    reference (the row with the most calls; on a tie the first in the rows' order, i.e. the
    suite's), and the fewest calls
    that reach the reference's FID within its interval (FID at most its upper end, or at
    most its FID where it has no interval), with that row's speed-up over the reference."""
    out: list[Block] = []
    key = headline()  # FID
    name = _name(key)
    order = {id(r): i for i, r in enumerate(rows)}
    by_model: dict[str, list[dict]] = {}
    for (model, *_), rs in frontier_lines(rows).items():
        by_model.setdefault(model, []).extend(rs)
    for model, rs in by_model.items():
        if len({calls(r) for r in rs}) < 2:  # one count of calls (a guidance sweep): no frontier
            continue
        bs, _ = speed_batch(rs)  # the largest batch this model's rows were all timed at
        ref = max(rs, key=lambda r: (calls(r), -order[id(r)]))
        ci = interval(ref, key)
        bar = ci[1] if ci is not None else float(ref[key])
        rs = sorted(rs, key=lambda r: (calls(r), float(r[key])))
        reach = next((r for r in rs if float(r[key]) <= bar), None)
        body = [[markup.text(variant(r)), str(calls(r)), fmt_ci(r[key], *interval(r, key))
                 if interval(r, key) else fmt(r[key]), fmt(speed(r, bs)),
                 "reference" if r is ref else ("yes" if float(r[key]) <= bar else "no")]
                for r in rs]
        out.append(Para(f"**{markup.text(model)}**: reference {markup.text(variant(ref))} "
                        f"({calls(ref)} calls, {name} "
                        f"{fmt(ref[key])}, upper end {fmt(bar)})."))
        out.append(Table(["sampler", "network calls", name,
                          "img/s" + (f" @{bs}" if bs else ""), "reaches the reference"], body))
        if reach is not None and reach is not ref:
            sr, sref = speed(reach, bs), speed(ref, bs)
            gain = f", {sr / sref:.2f}x its images/s" if sr and sref else ""
            out.append(Para(f"Fewest calls that reach the reference's {name}: "
                            f"**{calls(reach)}** "
                            f"({markup.text(variant(reach))}){gain}."))
        elif reach is ref:
            out.append(Para(f"No sampler with fewer calls reaches the reference's {name}."))
    return out


# ----------------------------------------------------------------------------- curves


def curve_names(cdf):
    """Each curve line's name in tables and legends: its model, with the sampler when a
    model has curves of more than one sampler."""
    several = cdf.groupby("model")[frame.LABEL].transform("nunique") > 1
    return cdf["model"].where(~several, cdf["model"] + " · " + cdf[frame.LABEL])


def _budget(rec: dict) -> tuple:
    return tuple(rec.get(f"budget.{k}") for k in ("steps", "seconds", "flops"))


def fmt_budget(budget: tuple) -> str:
    steps, seconds, flops = budget
    parts = []
    if present(steps):
        parts.append(f"{fmt(int(steps))} steps")
    if present(seconds):
        parts.append(f"{fmt(seconds)} s")
    if present(flops):
        parts.append(f"{flops:.3g} FLOPs")
    return ", ".join(parts) or "none given"


def ranking(cdf) -> list[Block]:
    """One dataset's curve lines (``frame.curves``) ranked by KID (the headline's small-N
    stand-in, else the headline) at each budget point (a fraction where every model has
    one): models whose 95% interval overlaps the leader's are tied with it (``≈ 1``). Only
    when every model had the same budget; otherwise one line saying so."""
    cdf = cdf.assign(name=curve_names(cdf))
    budgets = {n: _budget(frame.records(g.head(1))[0]) for n, g in cdf.groupby("name", sort=False)}
    if len(set(budgets.values())) > 1:
        per = "; ".join(f"{markup.text(n)}: {fmt_budget(b)}" for n, b in budgets.items())
        return [Para(f"The models' training budgets differ ({per}), so no ranking is made: "
                     "compare the curves at equal training compute instead.")]
    key = small_n() or headline()
    name = _name(key)
    scored = cdf[cdf[key].notna()] if key in cdf else cdf.iloc[:0]
    names = list(budgets)
    fractions = sorted(f for f, g in scored.groupby("fraction")
                       if set(g["name"]) >= set(names))
    if not fractions:
        return [Para(f"No budget fraction at which every model has a {name}: no ranking is "
                     "made.")]
    compute = "train_flops" if cdf["train_flops"].notna().any() else "train_seconds"
    head = ["budget fraction", "rank", "model", f"{name} [95% interval]",
            "training FLOPs" if compute == "train_flops" else "training s", "train steps"]
    body = []
    for f in fractions:
        recs = frame.records(scored[scored["fraction"] == f].drop_duplicates("name"))
        recs.sort(key=lambda r: -r[key] if metric_registry.column(key).direction > 0
                  else r[key])
        lead = interval(recs[0], key)
        for i, r in enumerate(recs):
            ci = interval(r, key)
            tied = i > 0 and lead is not None and ci is not None and \
                ci[0] <= lead[1] and lead[0] <= ci[1]
            rank = "≈ 1" if tied else str(i + 1)
            v = r.get(compute)
            body.append([f"{f:g}", rank, markup.text(r["name"]), fmt_ci(r[key], *(ci or ())),
                         (f"{v:.3g}" if compute == "train_flops" else fmt(v))
                         if present(v) else NA, fmt(r.get("train_steps"))])
    b = next(iter(budgets.values()))
    return [Para(f"Every model had the same budget ({fmt_budget(b)}). At each fraction of it, "
                 f"the models in order of {name} ({_better(key)}"
                 + ("; unbiased at small N" if key == small_n() else "")
                 + "); `≈ 1`: its 95% interval overlaps the leader's, so the two are not told "
                 "apart."),
            Table(head, body)]


def _file_order(path: Path, datasets) -> list[str]:
    """The datasets in the order the file first names them (the suite's order)."""
    seen = []
    for line in path.read_text().splitlines():
        try:
            ds = json.loads(line).get("dataset")
        except (ValueError, AttributeError):
            continue
        if ds not in seen:
            seen.append(ds)
    return [d for d in seen if d in set(datasets)] + sorted(set(datasets) - set(seen))


def training_compute(run_dir: Path, figures) -> list[Block]:
    """The section on quality against training compute, from ``run_dir/curve.jsonl``
    (nothing when there is none): per dataset, the figure and the ranking."""
    if not (run_dir / frame.CURVE_FILE).is_file():
        return []
    cdf = frame.curves(run_dir)
    if not len(cdf):
        return []
    out: list[Block] = [Heading(2, "Quality against training compute"), Para(
           f"Sample quality measured along training (`{frame.CURVE_FILE}`, the suite's "
           "`[evaluation] curve`) at fractions of each model's training budget, against the "
           "training compute spent (FLOPs: images seen x counted training FLOPs per image; "
           "seconds where FLOPs were not counted). Bars: 95% intervals (NLL: ± 1.96 "
           "standard errors). "
           "All points: `zoo.bench.curves(DIR)`.")]
    for ds in _file_order(run_dir / frame.CURVE_FILE, cdf["dataset"]):
        sub = cdf[cdf["dataset"] == ds]
        out.append(Heading(3, markup.text(ds)))
        path = figures.compute_curves(ds, sub, curve_names(sub), run_dir / FIGURES_DIR /
                                      f"quality_vs_compute_{figures.slug(ds)}.png")
        if path is not None:
            rel = path.relative_to(run_dir).as_posix()
            out.append(Image(markup.text(f"{ds}: quality against training compute"), rel))
        out += [*ranking(sub), *same_n_note(sub)]
    return out


def compute_table(df) -> list[Block]:
    """Counted model FLOPs per image and the fraction of the device's measured matmul peak
    achieved (MFU); the first training step (compilation, warm-up) apart, from a dataset's
    lines of the rows' DataFrame (``frame.frame``). Empty when no row has FLOPs (results
    written before zoo counted them)."""
    flops = [c for c in ("train_flops_per_image", "sample_flops_per_image") if c in df]
    if not flops or df[flops].isna().all().all():
        return []

    def get(line, col):
        return frame.value(line.get(col))

    def gflop(v):
        return fmt(v / 1e9) if present(v) else NA

    def pct(v):
        return f"{100 * v:.1f}%" if present(v) else NA

    head = ["model", "sampler", "train GFLOP/image", "train MFU", "first train step s",
            "sample GFLOP/image", "sample MFU"]
    return [Table(head, [
        [markup.text(get(r, "model")), markup.text(get(r, "sampler_label")),
         gflop(get(r, "train_flops_per_image")), pct(get(r, "train_mfu")),
         fmt(get(r, "train_first_step_s")), gflop(get(r, "sample_flops_per_image")),
         pct(get(r, "sample_mfu"))]
        for _, r in df.iterrows()])]


def _distinct(rows: list[dict], col: str) -> list[str]:
    """The distinct values of a column, in order, as report text (``markup.text``)."""
    vals = []
    for r in rows:
        v = r.get(col)
        if isinstance(v, dict):
            v = ", ".join(f"{k} {x}" for k, x in v.items())
        v = NA if not present(v) else markup.text(v)
        if v not in vals:
            vals.append(v)
    return vals


def environment(rows: list[dict], run_dir: Path | None = None) -> list[Block]:
    out: list[Block] = [Heading(2, "Environment")]
    combos: dict[tuple, list[dict]] = {}
    for r in rows:
        key = tuple(_distinct([r], c)[0] for c in ("device", "dtype", "versions", "commit"))
        combos.setdefault(key, []).append(r)
    if len(combos) > 1:
        out.append(Para(f"The rows were measured in {len(combos)} environments; timings "
                        "are comparable only within one."))
    items: list[tuple[int, str]] = []
    for (device, dtype, versions, commit), rs in combos.items():
        ds = ", ".join(dict.fromkeys(markup.text(r.get("dataset")) for r in rs))
        items += [(0, f"device: {device}; dtype: {dtype}; commit: {commit}"),
                  (1, f"versions: {versions}"), (1, f"{len(rs)} rows ({ds})")]
    out.append(Items(items))
    items = []
    ev = [("suite", "suite"), ("seed", "seed"), ("extractor", "FID/KID/IS/PR feature extractor"),
          ("extractor_hash", "extractor hash"), ("ref_split", "reference split"),
          ("n_samples", "samples per row"), ("n_reference", "reference images"),
          ("nll_images", "NLL test images"), ("memory_kind", "peak memory"),
          ("timestamp", "measured")]
    for col, what in ev:
        vals = _distinct(rows, col)
        if len(vals) > 1 and NA in vals:  # e.g. no NLL images for a model without a likelihood
            vals.remove(NA)
        if col == "timestamp" and len(vals) > 1:
            text = f"{min(vals)} to {max(vals)}"
        elif len(vals) > 1:  # say which dataset has which (an extractor per dataset)
            per = {v: [ds for ds, rs in by_dataset(rows).items() if v in _distinct(rs, col)]
                   for v in vals}
            text = "; ".join(f"{v} ({', '.join(map(markup.text, ds))})"
                             for v, ds in per.items())
        else:
            text = vals[0]
        items.append((0, f"{what}: {text}"))
        if col == "extractor":
            items += _card_links(rows, run_dir)
        if col == "n_reference":
            items += _small_references(rows)
    out.append(Items(items))
    return out


def _card_links(rows: list[dict], run_dir: Path | None) -> list[tuple[int, str]]:
    """Under the extractor: a link to the validity card of each extractor the rows used
    (``metrics.validity_card.find_card``, matched by its weights' sha256), or the command
    that measures one."""
    out = []
    pairs = dict.fromkeys((r.get("extractor"), r.get("extractor_hash")) for r in rows
                          if present(r.get("extractor")))
    for name, sha in pairs:
        card = validity_card.find_card(str(name), sha if present(sha) else None)
        if card is None:
            out.append((1, f"{markup.text(name)}: no validity card (`zoo extractor card "
                           f"{markup.text(name)}` measures one)"))
            continue
        href = quote(Path(os.path.relpath(card.resolve(), Path(run_dir or ".").resolve()))
                     .as_posix())
        fails = validity_card.failing(card)
        out.append((1, f"{markup.text(name)}: [validity card]({href}) (how each figure "
                       "responds to graded defects); "
                       + (f"flagged, not monotone in its defect: {', '.join(fails)}" if fails
                          else "every figure responds as expected")))
    return out


def _small_references(rows: list[dict]) -> list[tuple[int, str]]:
    """A note under the reference images for each reference set too small for a FID
    (``metrics.registry.small_reference``), with the datasets measured against it."""
    notes: dict[str, list[str]] = {}
    for r in rows:
        note = metric_registry.small_reference(r.get("n_reference"))
        if note:
            notes.setdefault(note, [])
            if r.get("dataset") not in notes[note]:
                notes[note].append(r.get("dataset"))
    return [(1, f"note: {note} ({', '.join(map(markup.text, ds))})")
            for note, ds in notes.items()]


def _memorization(row: dict) -> str:
    """The memorization figures of a row in words."""
    ratio, near = row.get("memorization_ratio"), row.get("near_copies")
    parts = []
    if present(ratio):
        parts.append(f"nearest-training distance {ratio:.2f}x the test images' (below 1: "
                     "closer to the training set)")
    if present(near):
        parts.append(f"near copies {near:.1%}")
    return "; ".join(parts) or "memorization not measured"


def _inside(run_dir: Path, rel: str) -> bool:
    """Whether ``rel`` names a file inside ``run_dir``: a row's image path is shown (and
    embedded in report.html) only then, never an absolute path or one through ``..``."""
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts:
        return False
    root = run_dir.resolve()
    target = (run_dir / path).resolve()
    return target.is_relative_to(root) and target.is_file()


def grids(rows: list[dict], run_dir: Path) -> list[Block]:
    out: list[Block] = [Heading(2, "Sample grids")]
    any_grid = False
    for ds, ds_rows in by_dataset(rows).items():
        with_grid = [r for r in ds_rows if present(r.get("grid"))]
        if not with_grid:
            continue
        any_grid = True
        out.append(Heading(3, markup.text(ds)))
        for r in with_grid:
            rel, name = Path(r["grid"]).as_posix(), markup.text(label(r))
            if _inside(run_dir, rel):
                out += [Para(name), Image(name, rel)]
            else:
                out.append(Para(f"{name}: grid {markup.code(rel)} is missing"))
            panel = r.get("memorization_panel")
            if present(panel) and _inside(run_dir, panel):
                out += [Para(f"{name}: the samples closest to a training image, each "
                             f"beside it ({_memorization(r)})"),
                        Image(f"{name}: closest to training", Path(panel).as_posix())]
    if not any_grid:
        out.append(Para("No row has a sample grid."))
    return out


def write_report(run_dir: Path | str) -> Path:
    """Read ``run_dir/results.jsonl``; write ``results.csv``, ``report.md``, ``report.html``
    and the figures (``run_dir/figures/*.png``); return the path of report.md."""
    from . import figures  # matplotlib is imported only when a report is written

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a directory; give a zoo bench output directory")
    partial: list[int] = []
    every = read_results(run_dir, partial_tail=partial)
    write_csv(every, run_dir / CSV_FILE)
    rows = aggregated(every)  # a model's seeds as their aggregate
    figs = figures.write_figures(rows, run_dir, run_dir / FIGURES_DIR)
    blocks = report_blocks(rows, run_dir, figs, partial, figures)
    path = run_dir / REPORT_FILE
    markdown = to_markdown(blocks)
    atomic_write(path, lambda tmp: Path(tmp).write_text(markdown))
    title = blocks[0].text if isinstance(blocks[0], Heading) else "Benchmark report"
    html = to_html(blocks, run_dir, title)
    atomic_write(run_dir / HTML_FILE, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
    return path


def report_blocks(rows: list[dict], run_dir: Path, figs, partial: list[int],
                  figures) -> list[Block]:
    """The whole report as blocks (``zoo.bench.document``), from the rows; ``figs`` the
    (title, path) of the figures written, ``partial`` the line of a partial row left out."""
    suites = ", ".join(_distinct(rows, "suite"))
    out: list[Block] = [Heading(1, f"Benchmark report: {suites}")]
    if (run_dir / "suite.toml").is_file():
        out.append(Para("Suite: [`suite.toml`](suite.toml) (a copy of the suite that was run; "
                        "`zoo bench suite.toml --out DIR` measures it again, and "
                        "`zoo compare THIS_DIR DIR` compares the two)."))
    if partial:
        out.append(Para(f"Note: line {partial[0]} of `{RESULTS_FILE}` is a partial row (the "
                        "run was stopped mid-write) and is left out; rerun the same `zoo bench` "
                        "command to measure it and finish the suite."))
    df = frame.frame(rows)
    datasets = list(by_dataset(rows))  # the order the rows give them, as the figures'
    out += summary(df, datasets)
    out += [Heading(2, "Results"), Para(
        "One row per model and sampler variant; `n/a` where a figure does not exist "
        "(a model without a likelihood; a metric not measured). N: generated samples the "
        "quality figures were measured on. A figure with `[lo, hi]` is given with its 95% "
        "bootstrap interval (resampling the generated samples); `± x` is a standard "
        "deviation (KID's, IS's over subsets) or, for NLL, the standard error. NLL per "
        "model, repeated on each of its sampler rows; `≤` marks an upper bound. All rows: "
        f"[`{CSV_FILE}`]({CSV_FILE}).")]
    for ds in datasets:
        out += [Heading(3, markup.text(ds)), *dataset_table(df[df["dataset"] == ds])]
    out += _section("Reconstruction", RECONSTRUCTION, {
        ds: reconstruction_table(df[df["dataset"] == ds]) for ds in datasets})
    out += _section("Sampler frontier", (
        "How few network calls per image reach the quality of the most expensive "
        f"sampler measured (the reference): {_name(headline())} with its 95% interval at "
        "each count of calls, and the sampling speed."),
        {ds: frontier_table(ds_rows) for ds, ds_rows in by_dataset(rows).items()})
    out += training_compute(run_dir, figures)
    peaks = list(dict.fromkeys(
        f"{r['device_peak_tflops'] * 1e3:.4g} GFLOP/s {r.get('device_peak_dtype') or ''}"
        .strip() for r in rows if present(r.get("device_peak_tflops"))))
    peak = (f" over the device's measured dense matmul peak ({'; '.join(peaks)})"
            if peaks else "")
    out += _section("Compute", COMPUTE.format(peak=peak), {
        ds: compute_table(df[df["dataset"] == ds]) for ds in datasets})
    out.append(Heading(2, "Figures"))
    if figs:
        for title, path in figs:
            title = markup.text(title)
            out += [Heading(3, title), Image(title, path.relative_to(run_dir).as_posix())]
    else:
        out.append(Para("No figures (no row has the figures they plot)."))
    out += environment(rows, run_dir)
    out += grids(rows, run_dir)
    return out


RECONSTRUCTION = (
    "What the first stage's compression costs, per model that reconstructs (an "
    "autoencoder, or a latent model through its autoencoder): the first N images of "
    "the reference split encoded and decoded. PSNR: mean over the images with its 95% "
    "t interval (higher is better); rFID: FID of the reconstructions against the "
    "split with the rows' extractor, 0 for perfect ones (lower is better; bootstrap "
    "interval); a VQ-VAE's codebook use over those images' codes: perplexity (at most "
    "the codebook size) and codes never used. Training compute of both stages: a "
    "latent model's budget, and its place in the training-compute ranking, count its "
    "second stage only; its autoencoder's training comes on top (total).")
COMPUTE = (
    "Model FLOPs per image, counted with `torch.utils.flop_counter` (matmuls, "
    "convolutions, attention; forward and backward for a training step, one "
    "image's whole sampling call), and MFU: achieved model FLOP/s per device "
    "(training, and sampling at the fastest batch size){peak}. The first "
    "training step pays compilation (`train.compile`) and warm-up and is kept "
    "out of the training throughput.")


def _section(title: str, text: str, tables: dict[str, list[Block]]) -> list[Block]:
    """A section of per-dataset tables under ``title`` and ``text``; nothing when no
    dataset has a table."""
    if not any(tables.values()):
        return []
    out: list[Block] = [Heading(2, title), Para(text)]
    for ds, table in tables.items():
        if table:
            out += [Heading(3, markup.text(ds)), *table]
    return out
