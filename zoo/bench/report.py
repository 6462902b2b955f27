"""``zoo report DIR``: turn ``DIR/results.jsonl`` into ``results.csv``, ``report.md`` and
figures (``DIR/figures/*.png``).

Everything in the report is computed from the rows: the summary that opens it (per dataset,
the best model on each axis and the quality-vs-speed Pareto front), one table per dataset,
the environment the rows were measured in, the sample grids and the figures. A figure that
does not exist for a row is ``n/a``, never 0.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..core import ConfigError
from ..metrics import registry as metric_registry
from . import frame
from .rows import (
    NA,
    RESULTS_FILE,
    by_dataset,
    fmt,
    fmt_nll,
    fmt_params,
    label,
    pareto_front,
    per_batch,
    per_model,
    present,
    read_results,
    speed,
    speed_batch,
    variant,
)

CSV_FILE = "results.csv"
REPORT_FILE = "report.md"
FIGURES_DIR = "figures"


# ----------------------------------------------------------------------------- results.csv


def write_csv(rows: list[dict], path: Path) -> Path:
    """results.csv: the DataFrame of the rows (``frame.frame``, what ``zoo.bench.results``
    returns), column for column; a figure that does not exist is an empty cell."""
    df = frame.frame(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(df.columns)
        for values in df.itertuples(index=False, name=None):
            w.writerow([frame.cell(v) for v in values])
    return path


# ----------------------------------------------------------------------------- report.md


def summary(rows: list[dict]) -> list[str]:
    """The opening of report.md: per dataset, the best model on each axis and the Pareto
    front of quality against sampling speed."""
    out = ["## Summary", ""]
    datasets = by_dataset(rows)
    out.append(
        f"Computed from the {len(rows)} rows of `{RESULTS_FILE}` "
        f"({len(datasets)} dataset{'s' if len(datasets) != 1 else ''}). FID: lower is better; "
        "NLL in bits per dimension on the test split, lower is better (exact, or an upper "
        "bound); speeds in images/s, higher is better."
    )
    out.append("")
    for ds, ds_rows in datasets.items():
        out += [f"### {ds}", "", "| axis | best | figure |", "|---|---|---|"]
        scored = [r for r in ds_rows if present(r.get("fid"))]
        if scored:
            b = min(scored, key=lambda r: r["fid"])
            out.append(f"| sample quality: lowest FID | {label(b)} | FID {fmt(b['fid'])} |")
        else:
            out.append(f"| sample quality: lowest FID | {NA} | no row has a FID |")
        models = per_model(ds_rows)
        nll_rows = [r for r in models if present(r.get("nll_bpd"))]
        kinds = sorted({r.get("nll_kind") or "?" for r in nll_rows},
                       key=lambda k: (k != "exact", k != "bound", k))
        for kind in kinds:
            kr = [r for r in nll_rows if (r.get("nll_kind") or "?") == kind]
            b = min(kr, key=lambda r: r["nll_bpd"])
            what = {"exact": "exact", "bound": "upper bound"}.get(kind, kind)
            out.append(
                f"| likelihood: lowest NLL ({what}) | {b['model']} | {fmt_nll(b, ' bpd')} |"
            )
        if not nll_rows:
            out.append(f"| likelihood: lowest NLL | {NA} | no model has an NLL |")
        bs, common = speed_batch(ds_rows)
        fast = [r for r in ds_rows if speed(r, bs) is not None]
        at = f"at batch {bs}" if common else "at each row's largest batch (none in common)"
        if fast:
            b = max(fast, key=lambda r: speed(r, bs))
            out.append(
                f"| sampling speed {at} | {label(b)} | {fmt(speed(b, bs))} images/s |"
            )
        else:
            out.append(f"| sampling speed | {NA} | no row was timed |")
        trained = [r for r in models if present(r.get("train_images_per_s"))]
        if trained:
            b = max(trained, key=lambda r: r["train_images_per_s"])
            out.append(
                f"| training speed | {b['model']} | {fmt(b['train_images_per_s'])} images/s |"
            )
        else:
            out.append(f"| training speed | {NA} | no model has a training speed |")
        out.append("")
        if len(kinds) > 1 and "bound" in kinds:
            best = min(nll_rows, key=lambda r: r["nll_bpd"])
            if best.get("nll_kind") == "bound":
                out.append(
                    f"Lowest NLL overall: {best['model']} (its upper bound is below every "
                    "exact figure, so it ranks first for certain)."
                )
            else:
                out.append(
                    f"Lowest NLL overall: {best['model']} ({best.get('nll_kind')}); a bound is "
                    "only an upper bound, so a model whose bound is higher may still have a "
                    "lower true NLL."
                )
            out.append("")
        front = pareto_front(ds_rows, bs)
        if front:
            out.append(
                f"Pareto front of quality against sampling speed (FID vs images/s {at}; no "
                "other row has both a lower FID and a higher speed), best FID first:"
            )
            out.append("")
            for r in front:
                out.append(f"- {label(r)}: FID {fmt(r['fid'])}, {fmt(speed(r, bs))} images/s")
        else:
            out.append("Pareto front: n/a (no row has both a FID and a sampling speed).")
        out.append("")
    return out


def quality_columns(rows: list[dict]) -> list[metric_registry.Column]:
    """The registry's table columns (a spread goes beside its figure) of the default metrics
    and of any other metric a row has a figure of."""
    shown = [m for m in metric_registry.names()
             if metric_registry.get(m).default
             or any(present(r.get(c.key)) for r in rows for c in metric_registry.columns(m))]
    return [c for c in metric_registry.columns(shown) if c.label]


def dataset_table(rows: list[dict]) -> list[str]:
    sizes = sorted({bs for r in rows for bs in per_batch(r, "sample_images_per_s")})
    quality = quality_columns(rows)
    head = ["model", "family", "sampler", "params", *[c.label for c in quality],
            "NLL bpd", *[f"sample img/s @{bs}" for bs in sizes],
            "latency ms p50 / p95", "train steps", "train s", "train img/s", "peak mem MB"]
    body = []
    for r in rows:
        sp = per_batch(r, "sample_images_per_s")
        p50, p95 = per_batch(r, "latency_ms_p50"), per_batch(r, "latency_ms_p95")
        lbs = r.get("latency_batch_size")
        if not present(lbs) or int(lbs) not in p50:
            lbs = max(p50) if p50 else None
        if lbs is None:
            lat = NA
        else:
            lat = f"{fmt(p50.get(int(lbs)))} / {fmt(p95.get(int(lbs)))} @{int(lbs)}"
        figures = []
        for c in quality:
            cell = fmt(r.get(c.key))
            if cell != NA and c.spread and present(r.get(c.spread)):
                cell += f" ± {fmt(r[c.spread], 2)}"
            figures.append(cell)
        cells = [str(r.get("model")), str(r.get("family") or NA), variant(r),
                 fmt_params(r.get("params")), *figures, fmt_nll(r),
                 *[fmt(sp.get(bs)) for bs in sizes], lat,
                 fmt(r.get("train_steps")), fmt(r.get("train_seconds")),
                 fmt(r.get("train_images_per_s")), fmt(r.get("peak_mem_mb"))]
        body.append(cells)
    return md_table(head, body)


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table, ``|`` inside cells escaped."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows]
    return out


def compute_table(df) -> list[str]:
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
    return md_table(head, [
        [str(get(r, "model")), str(get(r, "sampler_label")),
         gflop(get(r, "train_flops_per_image")), pct(get(r, "train_mfu")),
         fmt(get(r, "train_first_step_s")), gflop(get(r, "sample_flops_per_image")),
         pct(get(r, "sample_mfu"))]
        for _, r in df.iterrows()])


def _distinct(rows: list[dict], col: str) -> list[str]:
    vals = []
    for r in rows:
        v = r.get(col)
        if isinstance(v, dict):
            v = ", ".join(f"{k} {x}" for k, x in v.items())
        v = NA if not present(v) else str(v)
        if v not in vals:
            vals.append(v)
    return vals


def environment(rows: list[dict]) -> list[str]:
    out = ["## Environment", ""]
    combos: dict[tuple, list[dict]] = {}
    for r in rows:
        key = tuple(_distinct([r], c)[0] for c in ("device", "dtype", "versions", "commit"))
        combos.setdefault(key, []).append(r)
    if len(combos) > 1:
        out += [f"The rows were measured in {len(combos)} environments; timings are "
                "comparable only within one.", ""]
    for (device, dtype, versions, commit), rs in combos.items():
        ds = ", ".join(dict.fromkeys(str(r.get("dataset")) for r in rs))
        out += [f"- device: {device}; dtype: {dtype}; commit: {commit}",
                f"  - versions: {versions}",
                f"  - {len(rs)} rows ({ds})"]
    out.append("")
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
            text = "; ".join(f"{v} ({', '.join(ds)})" for v, ds in per.items())
        else:
            text = vals[0]
        out.append(f"- {what}: {text}")
    out.append("")
    return out


def grids(rows: list[dict], run_dir: Path) -> list[str]:
    out = ["## Sample grids", ""]
    any_grid = False
    for ds, ds_rows in by_dataset(rows).items():
        with_grid = [r for r in ds_rows if present(r.get("grid"))]
        if not with_grid:
            continue
        any_grid = True
        out += [f"### {ds}", ""]
        for r in with_grid:
            rel = Path(r["grid"]).as_posix()
            if (run_dir / rel).is_file():
                out += [f"{label(r)}", "", f"![{label(r)}]({rel})", ""]
            else:
                out += [f"{label(r)}: grid `{rel}` is missing", ""]
    if not any_grid:
        out += ["No row has a sample grid.", ""]
    return out


def write_report(run_dir: Path | str) -> Path:
    """Read ``run_dir/results.jsonl``; write ``results.csv``, ``report.md`` and the figures
    (``run_dir/figures/*.png``); return the path of report.md."""
    from . import figures  # matplotlib is imported only when a report is written

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a directory; give a zoo bench output directory")
    partial: list[int] = []
    rows = read_results(run_dir, partial_tail=partial)
    write_csv(rows, run_dir / CSV_FILE)
    figs = figures.write_figures(rows, run_dir, run_dir / FIGURES_DIR)

    suites = ", ".join(_distinct(rows, "suite"))
    md = [f"# Benchmark report: {suites}", ""]
    if (run_dir / "suite.toml").is_file():
        md += ["Suite: [`suite.toml`](suite.toml) (a copy of the suite that was run; "
               "`zoo bench suite.toml --out DIR` measures it again, and "
               "`zoo compare THIS_DIR DIR` compares the two).", ""]
    if partial:
        md += [f"Note: line {partial[0]} of `{RESULTS_FILE}` is a partial row (the run was "
               "stopped mid-write) and is left out; rerun the same `zoo bench` command to "
               "measure it and finish the suite.", ""]
    md += summary(rows)
    md += ["## Results", "",
           "One row per model and sampler variant; `n/a` where a figure does not exist "
           "(a model without a likelihood; a metric not measured). NLL per model, repeated on each "
           "of its sampler rows; `≤` marks an upper bound. All rows: "
           f"[`{CSV_FILE}`]({CSV_FILE}).", ""]
    for ds, ds_rows in by_dataset(rows).items():
        md += [f"### {ds}", ""]
        md += dataset_table(ds_rows)
        md.append("")
    df = frame.frame(rows)
    computed = {ds: compute_table(df[df["dataset"] == ds]) for ds in by_dataset(rows)}
    if any(computed.values()):
        peaks = list(dict.fromkeys(
            f"{r['device_peak_tflops'] * 1e3:.4g} GFLOP/s {r.get('device_peak_dtype') or ''}"
            .strip() for r in rows if present(r.get("device_peak_tflops"))))
        peak = (f" over the device's measured dense matmul peak ({'; '.join(peaks)})"
                if peaks else "")
        md += ["## Compute", "",
               "Model FLOPs per image, counted with `torch.utils.flop_counter` (matmuls, "
               "convolutions, attention; forward and backward for a training step, one "
               "image's whole sampling call), and MFU: achieved model FLOP/s per device "
               f"(training, and sampling at the fastest batch size){peak}. The first "
               "training step pays compilation (`train.compile`) and warm-up and is kept "
               "out of the training throughput.", ""]
        for ds, table in computed.items():
            if table:
                md += [f"### {ds}", "", *table, ""]
    md += ["## Figures", ""]
    if figs:
        for title, path in figs:
            rel = path.relative_to(run_dir).as_posix()
            md += [f"### {title}", "", f"![{title}]({rel})", ""]
    else:
        md += ["No figures (no row has the figures they plot).", ""]
    md += environment(rows)
    md += grids(rows, run_dir)
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(md).rstrip() + "\n")
    return path
