"""zoo.bench.report (results.csv, report.md, figures) and zoo.bench.compare (the CI gate) on
synthetic but realistic rows: no training, the answers are known by construction."""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import pytest

from zoo.bench import schema
from zoo.bench.compare import DEFAULT_TOLERANCES, compare_dirs, parse_tolerances
from zoo.bench.report import read_results, write_report
from zoo.core import ConfigError, ZooError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ENV = {"device": "cpu (2 threads)", "dtype": "float32",
       "versions": {"python": "3.11.7", "torch": "2.5.1", "zoo": "0.1.0"},
       "commit": "1698fb1", "seed": 0}

# (model, family, sampler, steps, eta, nll_bpd, nll_kind)
VARIANTS = [
    ("vae-conv", "vae", "mean", None, None, "bound"),
    ("gan-dcgan", "gan", "default", None, None, "none"),
    ("ar-transformer", "autoregressive", "ancestral", None, None, "exact"),
    ("ddpm", "diffusion", "ddpm", 1000, None, "bound"),
    ("ddpm", "diffusion", "ddim", 10, 0.0, "bound"),
    ("ddpm", "diffusion", "ddim", 50, 0.0, "bound"),
]


def _row(dataset, model, family, sampler, steps, eta, kind, *, fid, speed, nll, train,
         batches=(1, 16, 64)):
    row = dict.fromkeys(schema.COLUMNS)
    row.update(ENV)
    row.update(
        suite="test", dataset=dataset, model=model, family=family, sampler=sampler,
        steps=steps, eta=eta, temperature=1.0 if family == "autoregressive" else None,
        params={"vae": 310_000, "gan": 1_200_000, "autoregressive": 820_000,
                "diffusion": 2_100_000}[family],
        config_hash="abc123", train_steps=500, train_seconds=60.5,
        train_images_per_s=train, fid=fid, kid=fid / 1000, kid_std=0.001,
        is_=None, precision=0.6, recall=0.4, extractor="zoo-mnist-classifier",
        extractor_hash="e0e0", ref_split="test", n_samples=1000, n_reference=10000,
        nll_bpd=nll, nll_stderr=0.004 if nll is not None else None,
        nll_kind=kind, nll_images=1000 if nll is not None else None,
        # speed grows with the batch; the figure at the largest batch is `speed`
        sample_images_per_s={str(b): speed * (b / max(batches)) ** 0.3 for b in batches},
        latency_ms_p50={str(b): 1000 * b / speed for b in batches},
        latency_ms_p95={str(b): 1100 * b / speed for b in batches},
        latency_batch_size=max(batches), peak_mem_mb=512.0, memory_kind="cpu peak rss",
        grid=f"grids/{dataset}/{model}-{sampler}{steps or ''}.png",
        timestamp="2026-11-22T18:00:00Z",
    )
    row["is"] = 2.0 + 5.0 / fid
    del row["is_"]
    return row


# mnist: best FID ddpm ancestral; fastest sampler and trainer gan-dcgan; lowest exact NLL
# ar-transformer, lowest bound ddpm; Pareto front ddpm, ddim 50, ddim 10, gan-dcgan.
MNIST = {  # model/sampler/steps: (fid, images/s at batch 64, nll, train images/s)
    ("vae-conv", "mean", None): (40.0, 20000.0, 1.50, 4000.0),
    ("gan-dcgan", "default", None): (25.0, 30000.0, None, 5000.0),
    ("ar-transformer", "ancestral", None): (30.0, 50.0, 1.10, 300.0),
    ("ddpm", "ddpm", 1000): (8.0, 2.0, 1.30, 800.0),
    ("ddpm", "ddim", 10): (20.0, 200.0, 1.30, 800.0),
    ("ddpm", "ddim", 50): (10.0, 40.0, 1.30, 800.0),
}
MNIST_FRONT = ["ddpm · ddpm, 1000 steps", "ddpm · ddim, 50 steps, eta 0",
               "ddpm · ddim, 10 steps, eta 0", "gan-dcgan · default"]
# fashion-mnist: best FID ddim 50; ar-transformer timed at batches 1 and 16 only, so the
# largest common batch is 16; fastest there vae-conv; the lowest NLL is a bound (vae) below
# the exact one; fastest trainer vae-conv.
FASHION = {
    ("vae-conv", "mean", None): (60.0, 9000.0, 0.90, 6000.0),
    ("gan-dcgan", "default", None): (35.0, 8000.0, None, 5500.0),
    ("ar-transformer", "ancestral", None): (45.0, 60.0, 1.20, 250.0),
    ("ddpm", "ddpm", 1000): (14.0, 2.5, 1.40, 700.0),
    ("ddpm", "ddim", 10): (22.0, 220.0, 1.40, 700.0),
    ("ddpm", "ddim", 50): (12.0, 45.0, 1.40, 700.0),
}


def make_rows() -> list[dict]:
    rows = []
    for dataset, table in (("mnist", MNIST), ("fashion-mnist", FASHION)):
        for model, family, sampler, steps, eta, kind in VARIANTS:
            fid, speed, nll, train = table[(model, sampler, steps)]
            batches = (1, 16) if (dataset, model) == ("fashion-mnist", "ar-transformer") \
                else (1, 16, 64)
            rows.append(_row(dataset, model, family, sampler, steps, eta, kind, fid=fid,
                             speed=speed, nll=nll, train=train, batches=batches))
    return rows


def write_run(d: Path, rows: list[dict], *, grids=True, losses=True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    with (d / "results.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    if grids:
        from PIL import Image
        for r in rows[:-1]:  # the last row's grid is missing on disk
            p = d / r["grid"]
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (32, 32), 128).save(p)
    if losses:
        for ds, model, cols in (("mnist", "vae-conv", ("loss_bpd", "recon_bpd", "kl_bpd")),
                                ("mnist", "gan-dcgan", ("loss_d", "loss_g", "d_real")),
                                ("mnist", "ddpm", ("loss",))):
            p = d / "runs" / ds / model / "losses.csv"
            p.parent.mkdir(parents=True, exist_ok=True)
            with p.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["step", "seconds", "images_per_s", *cols])
                for i, step in enumerate(range(50, 1001, 50)):
                    w.writerow([step, step * 0.1, 1234.5,
                                *[round(2.0 / (1 + 0.1 * i) + j * 0.3, 4)
                                  for j in range(len(cols))]])
    return d


@pytest.fixture
def run(tmp_path) -> Path:
    return write_run(tmp_path / "run", make_rows())


def section(md: str, title: str) -> str:
    """The text of a '## title' section of report.md."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", md, re.M | re.S)
    assert m, f"no section {title!r} in report.md"
    return m.group(1)


def subsection(text: str, title: str) -> str:
    m = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^### |\Z)", text, re.M | re.S)
    assert m, f"no subsection {title!r}"
    return m.group(1)


def summary_table(text: str) -> dict[str, tuple[str, str]]:
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0] not in ("axis", "---"):
            out[cells[0]] = (cells[1], cells[2])
    return out


def table_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[2:]], \
        [c.strip() for c in lines[0].strip().strip("|").split("|")]


# ----------------------------------------------------------------------------- results.csv


def test_csv_has_a_row_per_result_and_flattened_columns(run):
    write_report(run)
    with (run / "results.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        recs = list(reader)
        cols = reader.fieldnames
    assert len(recs) == 12
    for c in ("sample_images_per_s@1", "sample_images_per_s@16", "sample_images_per_s@64",
              "latency_ms_p50@64", "latency_ms_p95@1", "versions.torch", "fid", "nll_kind"):
        assert c in cols
    assert "sample_images_per_s" not in cols and "versions" not in cols
    gan = next(r for r in recs if r["dataset"] == "mnist" and r["model"] == "gan-dcgan")
    assert gan["nll_bpd"] == "" and gan["nll_kind"] == "none"
    assert float(gan["sample_images_per_s@64"]) == pytest.approx(30000.0)
    assert gan["versions.torch"] == "2.5.1"
    ar = next(r for r in recs if r["dataset"] == "fashion-mnist"
              and r["model"] == "ar-transformer")
    assert ar["sample_images_per_s@64"] == ""  # not timed there: empty, never 0
    assert float(ar["nll_bpd"]) == pytest.approx(1.20)
    # a missing figure is an empty cell, never 0 (seed 0 and eta 0 are real zeros)
    assert not any(v in ("0", "0.0") for r in recs for k, v in r.items()
                   if k not in ("seed", "eta", "sampler_options.eta"))


# ----------------------------------------------------------------------------- report.md


def test_summary_names_the_best_model_per_axis(run):
    path = write_report(run)
    assert path == run / "report.md"
    md = path.read_text()
    assert md.index("## Summary") < md.index("## Results")
    summ = section(md, "Summary")

    mnist = subsection(summ, "mnist")
    t = summary_table(mnist)
    assert t["sample quality: lowest FID"] == ("ddpm · ddpm, 1000 steps", "FID 8.000")
    assert t["likelihood: lowest NLL (exact)"][0] == "ar-transformer"
    assert "1.100" in t["likelihood: lowest NLL (exact)"][1]
    assert t["likelihood: lowest NLL (upper bound)"][0] == "ddpm"
    assert t["likelihood: lowest NLL (upper bound)"][1].startswith("≤ 1.300")
    assert t["sampling speed at batch 64"] == ("gan-dcgan · default", "30,000 images/s")
    assert t["training speed"] == ("gan-dcgan", "5,000 images/s")
    assert "may still have a lower true NLL" in mnist
    front = re.findall(r"^- (.+?): FID", mnist, re.M)
    assert front == MNIST_FRONT

    fashion = subsection(summ, "fashion-mnist")
    t = summary_table(fashion)
    assert t["sample quality: lowest FID"][0] == "ddpm · ddim, 50 steps, eta 0"
    # ar-transformer was not timed at 64: the largest common batch is 16
    assert t["sampling speed at batch 16"][0] == "vae-conv · mean"
    assert t["training speed"][0] == "vae-conv"
    assert t["likelihood: lowest NLL (upper bound)"][0] == "vae-conv"
    assert "ranks first for certain" in fashion
    front = re.findall(r"^- (.+?): FID", fashion, re.M)
    assert front[0] == "ddpm · ddim, 50 steps, eta 0" and front[-1] == "vae-conv · mean"
    assert "ar-transformer · ancestral, T 1" not in front  # dominated


def test_summary_is_computed_from_the_rows(tmp_path):
    rows = make_rows()
    for r in rows:
        if r["dataset"] == "mnist" and r["model"] == "vae-conv":
            r["fid"], r["train_images_per_s"] = 3.0, 9999.0
    md = write_report(write_run(tmp_path / "r", rows)).read_text()
    t = summary_table(subsection(section(md, "Summary"), "mnist"))
    assert t["sample quality: lowest FID"] == ("vae-conv · mean", "FID 3.000")
    assert t["training speed"] == ("vae-conv", "9,999 images/s")
    front = re.findall(r"^- (.+?): FID", subsection(section(md, "Summary"), "mnist"), re.M)
    assert front == ["vae-conv · mean", "gan-dcgan · default"]


def test_one_table_per_dataset_with_na_never_zero(run):
    md = write_report(run).read_text()
    results = section(md, "Results")
    for ds, n in (("mnist", 6), ("fashion-mnist", 6)):
        rows, head = table_rows(subsection(results, ds))
        assert len(rows) == n
        assert all(len(r) == len(head) for r in rows)
        nll = head.index("NLL bpd")
        gan = next(r for r in rows if r[0] == "gan-dcgan")
        assert gan[nll] == "n/a"
        ar = next(r for r in rows if r[0] == "ar-transformer")
        assert ar[nll].endswith("(exact)")
        vae = next(r for r in rows if r[0] == "vae-conv")
        assert vae[nll].startswith("≤ ") and vae[nll].endswith("(bound)")
        for r in rows:
            for cell in r:
                assert cell not in ("0", "0.0", "None", "nan", "")
    rows, head = table_rows(subsection(results, "fashion-mnist"))
    ar = next(r for r in rows if r[0] == "ar-transformer")
    assert ar[head.index("sample img/s @64")] == "n/a"
    assert len(re.findall(r"^\| model \|", results, re.M)) == 2


def test_environment_and_grids(run):
    md = write_report(run).read_text()
    env = section(md, "Environment")
    assert "cpu (2 threads)" in env and "float32" in env and "1698fb1" in env
    assert "torch 2.5.1" in env and "zoo-mnist-classifier" in env
    grids = section(md, "Sample grids")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", grids)
    assert len(links) == 11 and all((run / p).is_file() for p in links)
    assert "ddim50.png` is missing" in grids  # the last row's grid is not on disk


def test_a_reference_set_below_the_minimum_is_flagged(tmp_path):
    from zoo.metrics.registry import MIN_REFERENCE_IMAGES

    rows = make_rows()
    for r in rows:
        if r["dataset"] == "mnist":
            r["n_reference"] = 180  # a small own dataset's test split
    env = section(write_report(write_run(tmp_path / "small", rows, grids=False,
                                         losses=False)).read_text(), "Environment")
    (note,) = [ln for ln in env.splitlines() if "note:" in ln]
    assert "only 180 reference images" in note and f"{MIN_REFERENCE_IMAGES:,}" in note
    assert note.endswith("(mnist)")  # fashion-mnist's 10,000 reference images: no note


def test_figures_exist_and_are_pngs(run):
    md = write_report(run).read_text()
    figs = sorted((run / "figures").glob("*.png"))
    names = {p.name for p in figs}
    for ds in ("mnist", "fashion-mnist"):
        for kind in ("quality_vs_speed", "frontier", "throughput_vs_batch"):
            assert f"{kind}_{ds}.png" in names
    assert "training_curves_mnist.png" in names  # losses.csv only for mnist
    assert "training_curves_fashion-mnist.png" not in names
    for p in figs:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000
        assert f"(figures/{p.name})" in section(md, "Figures")


def test_report_of_a_missing_or_corrupt_run(tmp_path):
    with pytest.raises(ConfigError, match="results.jsonl"):
        write_report(tmp_path)
    (tmp_path / "results.jsonl").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        write_report(tmp_path)
    (tmp_path / "results.jsonl").write_text(json.dumps(make_rows()[0]) + "\n{\"dataset\": \n")
    with pytest.raises(ConfigError, match="line 2"):
        write_report(tmp_path)
    (tmp_path / "results.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="not a JSON object"):
        write_report(tmp_path)


BIG = 10**400  # parses as a Python int; converts to no float and no int64

POISONED_ROWS = [  # (key, value, what the error says about it)
    ("fid", "abc", "fid must be a number, got text"),
    ("fid", BIG, "fid must be a number, got the number 1000"),
    ("fid", [1, 2], "fid must be a number, got a list"),
    ("fid", {"a": 1}, "fid must be a number, got an object"),
    ("nll_bpd", "abc", "nll_bpd must be a number"),
    ("nll_bpd", BIG, "nll_bpd must be a number"),
    ("train_seconds", BIG, "train_seconds must be a number"),
    ("params", "abc", "params must be a whole number within 64 bits"),
    ("params", [1, 2], "params must be a whole number"),
    ("n_samples", {"a": 1}, "n_samples must be a whole number"),
    ("train_steps", BIG, "train_steps must be a whole number within 64 bits"),
    ("seed", BIG, "seed must be a whole number within 64 bits"),
    ("network_calls", "abc", "network_calls must be a whole number"),
    ("sample_images_per_s", {"64": "x"}, "sample_images_per_s must be an object of"),
    ("sample_images_per_s", {"64": BIG}, "sample_images_per_s must be an object of"),
    ("fid_ci95", ["a", "b"], "fid_ci95 must be a [low, high] pair of numbers"),
    ("fid_ci95", [1, BIG], "fid_ci95 must be a [low, high] pair of numbers"),
    ("model", [1, 2], "model must be a name"),
    ("dataset", {"a": 1}, "dataset must be a name"),
    ("dataset", BIG, "dataset must be a name"),
    ("sampler_options", {"steps": BIG}, "sampler_options must be an object of plain values"),
]


@pytest.mark.parametrize("key, value, what", POISONED_ROWS,
                         ids=[f"{k}-{type(v).__name__}" for k, v, _ in POISONED_ROWS])
def test_poisoned_row_is_one_error_naming_file_line_and_key(tmp_path, key, value, what):
    """A value of the wrong type (text, a list or an object where a number goes, an integer
    beyond 64 bits or any float) is refused where results.jsonl is read, for the report and
    both sides of the gate; it was a ValueError, TypeError or OverflowError deep inside."""
    rows = make_rows()
    rows[2][key] = value
    bad = write_run(tmp_path / "bad", rows, grids=False, losses=False)
    good = write_run(tmp_path / "good", make_rows(), grids=False, losses=False)
    pattern = rf"bad/results.jsonl line 3 is not a row zoo wrote: {re.escape(what)}"
    for action in (lambda: write_report(bad), lambda: compare_dirs(good, bad),
                   lambda: compare_dirs(bad, good)):
        with pytest.raises(ConfigError, match=pattern):
            action()


def test_deeply_nested_or_overlong_line_is_one_error(tmp_path):
    row = json.dumps(make_rows()[0])
    for text, what in ((row[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}", "32 levels"),
                       (row[:-1] + ', "x": ' + "9" * 5000 + "}", "not valid JSON")):
        (tmp_path / "results.jsonl").write_text(row + "\n" + text + "\n")
        with pytest.raises(ConfigError, match=f"results.jsonl line 2 .*{what}"):
            write_report(tmp_path)


def test_poisoned_curve_point_is_one_error(tmp_path):
    write_run(tmp_path, make_rows(), grids=False, losses=False)
    point = curve_point("ddpm", "diffusion", 0.5, 0.01, 0.001)
    write_curve(tmp_path, [point, {**point, "fraction": "half"}])
    with pytest.raises(ConfigError, match="curve.jsonl line 2 .*fraction must be a number"):
        write_report(tmp_path)


def test_report_of_a_run_killed_mid_write(tmp_path):
    """A partial unterminated last line is left out of the report (and said so), but the
    CI gate refuses it."""
    rows = make_rows()
    write_run(tmp_path, rows, grids=False, losses=False)
    with (tmp_path / "results.jsonl").open("a") as f:
        f.write(json.dumps(rows[0])[:40])
    md = write_report(tmp_path).read_text()
    assert "line 13 of `results.jsonl` is a partial row" in md
    with (tmp_path / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 12
    with pytest.raises(ConfigError, match="line 13 is not valid JSON"):
        compare_dirs(tmp_path, tmp_path)


# ----------------------------------------------------------------------------- compare


def _variant_of(rows, dataset, model, sampler, steps=None):
    return next(r for r in rows if (r["dataset"], r["model"], r["sampler"], r["steps"])
                == (dataset, model, sampler, steps))


def test_compare_identical_runs_pass(tmp_path):
    base = write_run(tmp_path / "base", make_rows(), grids=False, losses=False)
    text, regressed = compare_dirs(base, base)
    assert not regressed
    assert "RESULT: OK" in text and "REGRESSED" not in text
    # a results.jsonl path works as well as its directory
    text2, regressed2 = compare_dirs(base / "results.jsonl", base)
    assert not regressed2 and "12 rows compared" in text2


def test_compare_flags_a_regression_past_tolerance(tmp_path):
    rows = make_rows()
    base = write_run(tmp_path / "base", rows, grids=False, losses=False)
    new_rows = copy.deepcopy(rows)
    _variant_of(new_rows, "mnist", "ddpm", "ddim", 10)["fid"] = 20.0 * 1.25  # +25% > 10%
    new = write_run(tmp_path / "new", new_rows, grids=False, losses=False)
    text, regressed = compare_dirs(base, new, wide=True)
    assert regressed
    line = next(ln for ln in text.splitlines() if "ddim, 10 steps" in ln and " fid " in ln)
    assert "REGRESSED" in line and "+25.0%" in line and "15%" in line
    assert "RESULT: REGRESSED" in text
    # a looser tolerance lets it pass, as "worse"
    text, regressed = compare_dirs(base, new, parse_tolerances(["fid=30%"]), wide=True)
    assert not regressed
    line = next(ln for ln in text.splitlines() if "ddim, 10 steps" in ln and " fid " in ln)
    assert line.rstrip().endswith("worse")


def test_compare_improvements_and_timings_do_not_fail_the_gate(tmp_path):
    rows = make_rows()
    base = write_run(tmp_path / "base", rows, grids=False, losses=False)
    new_rows = copy.deepcopy(rows)
    r = _variant_of(new_rows, "mnist", "vae-conv", "mean")
    r["fid"] = 20.0  # better
    r["nll_bpd"] = 1.40  # better
    r["is"] = r["is"] * 2  # higher is better
    slow = _variant_of(new_rows, "mnist", "gan-dcgan", "default")
    slow["sample_images_per_s"] = {k: v / 2 for k, v in slow["sample_images_per_s"].items()}
    slow["train_images_per_s"] = 10.0
    new = write_run(tmp_path / "new", new_rows, grids=False, losses=False)
    text, regressed = compare_dirs(base, new, wide=True)
    assert not regressed, text
    lines = text.splitlines()
    vae = [ln for ln in lines if ln.startswith("mnist / vae-conv")]
    for metric in (" fid ", " nll_bpd ", " is "):
        line = next(ln for ln in vae if metric in ln)
        assert line.rstrip().endswith("better"), line
    gan = next(ln for ln in lines
               if ln.startswith("mnist / gan-dcgan") and "sample_images_per_s@64" in ln)
    assert gan.rstrip().endswith("worse")
    # gated only when asked
    text, regressed = compare_dirs(base, new, parse_tolerances(["sample_images_per_s=20%"]),
                                   wide=True)
    assert regressed
    gan = next(ln for ln in text.splitlines()
               if ln.startswith("mnist / gan-dcgan") and "sample_images_per_s@64" in ln)
    assert gan.rstrip().endswith("REGRESSED")


def test_compare_lists_rows_in_one_run_only(tmp_path):
    rows = make_rows()
    base = write_run(tmp_path / "base", rows, grids=False, losses=False)
    extra = copy.deepcopy(_variant_of(rows, "mnist", "ddpm", "ddim", 50))
    extra["steps"] = 100
    dropped = _variant_of(rows, "fashion-mnist", "gan-dcgan", "default")
    new = write_run(tmp_path / "new", [r for r in rows if r is not dropped] + [extra],
                    grids=False, losses=False)
    text, regressed = compare_dirs(base, new)
    assert "rows in BASE only" in text and "fashion-mnist / gan-dcgan / default" in text
    assert "rows in NEW only" in text and "mnist / ddpm / ddim, 100 steps, eta 0" in text
    assert regressed  # a measurement that vanished fails the gate
    # the other way round only adds a row: that passes
    text, regressed = compare_dirs(new, new)
    assert not regressed
    text, regressed = compare_dirs(tmp_path / "base" / "results.jsonl",
                                   write_run(tmp_path / "more", rows + [extra],
                                             grids=False, losses=False))
    assert not regressed and "rows in NEW only" in text and "ddim, 100 steps" in text


def test_compare_warns_when_the_evaluation_differs(tmp_path):
    rows = make_rows()
    base = write_run(tmp_path / "base", rows, grids=False, losses=False)
    new_rows = copy.deepcopy(rows)
    for r in new_rows:
        r["n_samples"] = 5000
    text, regressed = compare_dirs(base, write_run(tmp_path / "new", new_rows, grids=False,
                                                   losses=False))
    assert not regressed
    assert "warning: the runs differ in N in 12 of 12 row(s)" in text
    assert "warning:" not in compare_dirs(base, base)[0]


def test_compare_a_metric_that_vanished_is_a_regression(tmp_path):
    rows = make_rows()
    base = write_run(tmp_path / "base", rows, grids=False, losses=False)
    new_rows = copy.deepcopy(rows)
    _variant_of(new_rows, "mnist", "ar-transformer", "ancestral")["nll_bpd"] = None
    _variant_of(new_rows, "mnist", "ddpm", "ddpm", 1000)["fid"] = float("nan")
    text, regressed = compare_dirs(base, write_run(tmp_path / "new", new_rows, grids=False,
                                                   losses=False))
    assert regressed
    bad = [ln for ln in text.splitlines()
           if ln.rstrip().endswith("REGRESSED") and not ln.startswith("RESULT")]
    assert len(bad) == 2


def test_compare_missing_empty_or_corrupt_file(tmp_path):
    good = write_run(tmp_path / "good", make_rows(), grids=False, losses=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match="results.jsonl"):
        compare_dirs(tmp_path / "empty", good)
    with pytest.raises(ZooError, match="does not exist"):
        compare_dirs(good, tmp_path / "nowhere")
    (tmp_path / "empty" / "results.jsonl").write_text("\n")
    with pytest.raises(ZooError, match="empty"):
        compare_dirs(good, tmp_path / "empty")
    (tmp_path / "empty" / "results.jsonl").write_text("not json\n")
    with pytest.raises(ZooError, match="line 1 is not valid JSON"):
        compare_dirs(tmp_path / "empty", good)


def test_parse_tolerances():
    tol = parse_tolerances([])
    assert tol == DEFAULT_TOLERANCES
    assert set(tol) == set(schema.DETERMINISTIC)  # timings are not gated by default
    tol = parse_tolerances(["fid=10%", "nll_bpd=0.02", "latency_ms_p50=50%", "kid=off"])
    assert tol["fid"] == ("rel", pytest.approx(0.10))
    assert tol["nll_bpd"] == ("abs", pytest.approx(0.02))
    assert tol["latency_ms_p50"] == ("rel", pytest.approx(0.5))
    assert "kid" not in tol and tol["is"] == DEFAULT_TOLERANCES["is"]
    for bad in ("fdi=10%", "fid", "fid=", "fid=abc", "fid=-1", "fid=10%%", "=3",
                "sampler=1"):
        with pytest.raises(ConfigError, match=re.escape(repr(bad))):
            parse_tolerances([bad])


def test_read_results_keeps_the_last_row_of_a_key(tmp_path):
    rows = make_rows()
    again = copy.deepcopy(rows[0])
    again["fid"] = 1.0
    write_run(tmp_path, rows + [again], grids=False, losses=False)
    got = read_results(tmp_path)
    assert len(got) == 12
    assert next(r for r in got if schema.row_key(r) == schema.row_key(again))["fid"] == 1.0


def test_pareto_front_ties():
    from zoo.bench.rows import pareto_front

    def row(name, fid, speed):
        return {"model": name, "fid": fid, "sample_images_per_s": {"8": speed}}

    rows = [row("a", 10.0, 100.0), row("b", 10.0, 50.0),  # b: same FID, slower
            row("c", 20.0, 100.0),  # c: same speed, worse FID
            row("d", 5.0, 10.0), row("e", 30.0, 1000.0), row("f", None, 5000.0)]
    assert [r["model"] for r in pareto_front(rows, 8)] == ["d", "a", "e"]
    assert [r["model"] for r in pareto_front(rows + [row("g", 10.0, 100.0)], 8)] == \
        ["d", "a", "g", "e"]  # an identical point is not beaten: both stay


# ----------------------------------------------------------------------------- intervals


def with_intervals(rows: list[dict]) -> list[dict]:
    """The rows with 95% intervals on FID and KID of mnist's (fashion-mnist's rows are of
    the older schema, without)."""
    for r in rows:
        if r["dataset"] == "mnist":
            r["fid_ci95"] = [r["fid"] * 0.9, r["fid"] * 1.1]
            r["kid_ci95"] = [r["kid"] * 0.8, r["kid"] * 1.25]
    return rows


def test_tables_show_intervals_and_older_rows_render_without(tmp_path):
    run = write_run(tmp_path / "r", with_intervals(make_rows()))
    md = write_report(run).read_text()
    results = section(md, "Results")
    rows, head = table_rows(subsection(results, "mnist"))
    ddpm = next(r for r in rows if r[2] == "ddpm, 1000 steps")
    assert ddpm[head.index("FID")] == "8.000 [7.200, 8.800]"
    assert ddpm[head.index("KID")] == "0.008000 [0.006400, 0.01000]"
    assert ddpm[head.index("N")] == "1,000"
    ar = next(r for r in rows if r[0] == "ar-transformer")
    assert ar[head.index("NLL bpd")] == "1.100 ± 0.004 (exact)"
    # fashion-mnist's rows have no interval: the figure alone (KID with its std)
    rows, head = table_rows(subsection(results, "fashion-mnist"))
    ddpm = next(r for r in rows if r[2] == "ddpm, 1000 steps")
    assert ddpm[head.index("FID")] == "14.00"
    assert ddpm[head.index("KID")] == "0.01400 ± 0.0010"
    t = summary_table(subsection(section(md, "Summary"), "mnist"))
    assert t["sample quality: lowest FID"] == ("ddpm · ddpm, 1000 steps",
                                               "FID 8.000 [7.200, 8.800]")
    front = subsection(section(md, "Summary"), "mnist")
    assert "- ddpm · ddpm, 1000 steps: FID 8.000 [7.200, 8.800], " in front


@pytest.mark.slow
def test_same_n_note_and_kid_ranking_when_n_differs(tmp_path):
    md = write_report(write_run(tmp_path / "same", make_rows())).read_text()
    assert "different N" not in md and "KID is the comparison figure" not in md

    rows = make_rows()
    for r in rows:  # mnist's ddpm ancestral at N = 100: its FID 8.0 is not comparable
        if r["dataset"] == "mnist" and r["sampler"] == "ddpm":
            r["n_samples"] = 100
        if r["dataset"] == "mnist" and r["model"] == "gan-dcgan":
            r["kid"] = 0.001  # the lowest KID
    md = write_report(write_run(tmp_path / "mixed", rows)).read_text()
    results = section(md, "Results")
    mnist = subsection(results, "mnist")
    assert "measured at different N (generated samples: 100, 1,000)" in mnist
    assert "different N" not in subsection(results, "fashion-mnist")
    summ = subsection(section(md, "Summary"), "mnist")
    t = summary_table(summ)
    assert "sample quality: lowest FID" not in t
    assert t["sample quality: lowest KID"] == ("gan-dcgan · default", "KID 0.001000")
    assert ("KID is the comparison figure here: the rows' N differ (100, 1000) and FID is "
            "biased at small N") in summ
    assert "Pareto front of quality against sampling speed (KID vs" in summ
    t = summary_table(subsection(section(md, "Summary"), "fashion-mnist"))
    assert "sample quality: lowest FID" in t


def test_error_extents():
    from zoo.bench.figures import error_extents

    assert error_extents([10.0, 5.0, 3.0], [(9.0, 12.0), None, (3.5, 4.0)]) == \
        [[1.0, 0.0, 0.0], [2.0, 0.0, 1.0]]  # no interval: no bar; outside it: none below


def test_figures_draw_the_intervals(tmp_path, monkeypatch):
    from zoo.bench import figures

    drawn = []
    real = figures.error_extents

    def spy(values, intervals):
        out = real(values, intervals)
        drawn.append(out)
        return out
    monkeypatch.setattr(figures, "error_extents", spy)
    run = write_run(tmp_path / "r", with_intervals(make_rows()), losses=False)
    write_report(run)
    bars = [x for below, above in drawn for x in below + above]
    assert pytest.approx(0.8) in bars and pytest.approx(4.0) in bars  # ddpm 8 ± 10%, vae 40
    for ds in ("mnist", "fashion-mnist"):
        assert (run / "figures" / f"quality_vs_speed_{ds}.png").is_file()
        assert (run / "figures" / f"frontier_{ds}.png").is_file()


# ----------------------------------------------------------------------------- curves


def curve_point(model, family, fraction, kid, half, *, dataset="mnist", budget=None,
                fid=None, nll=None, kind="none", flops_per_image=1e6):
    steps = int(400 * fraction)
    return {
        "suite": "test", "dataset": dataset, "model": model, "family": family,
        "sampler": "default", "sampler_options": {}, "fraction": fraction,
        "train_steps": steps, "train_images": steps * 32,
        "train_flops": steps * 32 * flops_per_image, "train_seconds": steps * 0.05,
        "budget": budget or {"steps": 400, "seconds": None, "flops": None},
        "n_samples": 500, "extractor": "mnist-classifier", "ref_split": "test",
        "fid": fid if fid is not None else kid * 1000,
        "fid_ci95": [(kid - half) * 1000, (kid + half) * 1000],
        "kid": kid, "kid_ci95": [kid - half, kid + half],
        "nll_bpd": nll, "nll_stderr": 0.01 if nll is not None else None, "nll_kind": kind,
        "nll_images": 256 if nll is not None else None,
    }


# KID at fractions 0.25, 0.5, 1.0 (gan-mlp has no point at 0.125, so it is not ranked):
# at 0.25 vae leads, gan's interval overlaps it (tied), ar's does not; at 1.0 ar leads alone.
CURVE = {
    ("vae-mlp", "vae"): {0.125: (0.30, 0.02), 0.25: (0.20, 0.02), 0.5: (0.15, 0.02),
                         1.0: (0.12, 0.01)},
    ("gan-mlp", "gan"): {0.25: (0.21, 0.02), 0.5: (0.25, 0.02), 1.0: (0.14, 0.01)},
    ("ar-transformer", "autoregressive"): {0.125: (0.50, 0.02), 0.25: (0.40, 0.02),
                                           0.5: (0.16, 0.02), 1.0: (0.05, 0.01)},
}


def write_curve(d: Path, points: list[dict]) -> Path:
    with (d / "curve.jsonl").open("w") as f:
        for p in points:
            f.write(json.dumps(p) + "\n")
    return d


def curve_points(**kw) -> list[dict]:
    nll = {"vae-mlp": ("bound", 1.6), "ar-transformer": ("exact", 1.2)}
    out = []
    for (model, family), pts in CURVE.items():
        kind, base = nll.get(model, ("none", None))
        for f, (kid, half) in pts.items():
            out.append(curve_point(model, family, f, kid, half, kind=kind,
                                   nll=None if base is None else base / f ** 0.1, **kw))
    return out


def ranking_rows(text: str) -> list[tuple[str, str, str]]:
    rows, head = table_rows(text)
    return [(r[head.index("budget fraction")], r[head.index("rank")],
             r[head.index("model")]) for r in rows]


def test_ranking_at_each_budget_point(tmp_path):
    run = write_run(tmp_path / "r", make_rows(), grids=False, losses=False)
    write_curve(run, curve_points())
    md = write_report(run).read_text()
    sec = section(md, "Quality against training compute")
    mnist = subsection(sec, "mnist")
    assert "Every model had the same budget (400 steps)" in mnist
    assert ranking_rows(mnist) == [
        ("0.25", "1", "vae-mlp"), ("0.25", "≈ 1", "gan-mlp"), ("0.25", "3", "ar-transformer"),
        ("0.5", "1", "vae-mlp"), ("0.5", "≈ 1", "ar-transformer"), ("0.5", "3", "gan-mlp"),
        ("1", "1", "ar-transformer"), ("1", "2", "vae-mlp"), ("1", "3", "gan-mlp"),
    ]
    rows, head = table_rows(mnist)
    assert rows[0][head.index("KID [95% interval]")] == "0.2000 [0.1800, 0.2200]"
    assert rows[0][head.index("training FLOPs")] == "3.2e+09"
    fig = run / "figures" / "quality_vs_compute_mnist.png"
    assert fig.read_bytes()[:8] == PNG_MAGIC
    assert "(figures/quality_vs_compute_mnist.png)" in mnist
    assert md.index("## Results") < md.index("## Quality against training compute")


def test_no_ranking_when_budgets_differ(tmp_path):
    run = write_run(tmp_path / "r", make_rows(), grids=False, losses=False)
    pts = curve_points()
    for p in pts:
        if p["model"] == "gan-mlp":
            p["budget"] = {"steps": 800, "seconds": None, "flops": None}
    write_curve(run, pts)
    mnist = subsection(section(write_report(run).read_text(),
                               "Quality against training compute"), "mnist")
    assert "training budgets differ" in mnist and "gan-mlp: 800 steps" in mnist
    assert "no ranking is made" in mnist
    assert not table_rows_or_none(mnist)
    assert (run / "figures" / "quality_vs_compute_mnist.png").is_file()


def table_rows_or_none(text: str):
    return [ln for ln in text.splitlines() if ln.startswith("|")]


def test_no_compute_section_without_a_curve(run):
    assert "## Quality against training compute" not in write_report(run).read_text()


# ----------------------------------------------------------------------------- frontier


def frontier_row(sampler, steps, calls, fid, half, speed, **options):
    row = _row("mnist", "ddpm", "diffusion", sampler, steps, 0.0, "bound", fid=fid,
               speed=speed, nll=1.3, train=800.0)
    row["sampler_options"] = {"steps": steps, **options}
    row["network_calls"] = calls
    row["fid_ci95"] = [fid - half, fid + half]
    return row


def test_the_frontier_names_the_fewest_calls_that_reach_the_reference(tmp_path):
    """The reference is the first row at the most calls (ddim 50 listed before dpmpp 50);
    a row reaches it when its FID is at most the reference's upper end."""
    from zoo.bench.document import to_markdown
    from zoo.bench.report import frontier_table

    rows = [frontier_row("ddim", 50, 50, 10.0, 1.0, 40.0),
            frontier_row("ddim", 10, 10, 20.0, 2.0, 200.0),
            frontier_row("dpmpp-2m", 50, 50, 9.0, 1.0, 40.0),
            frontier_row("dpmpp-2m", 10, 10, 10.9, 1.0, 190.0),   # reaches (<= 11.0)
            frontier_row("dpmpp-2m", 5, 5, 11.5, 1.0, 380.0),     # does not
            frontier_row("heun", 3, 5, 30.0, 3.0, 390.0)]
    text = to_markdown(frontier_table(rows))
    assert "reference ddim, 50 steps, eta 0 (50 calls, FID 10.00, upper end 11.00)" in text
    table, head = table_rows(text)
    assert head == ["sampler", "network calls", "FID", "img/s @64", "reaches the reference"]
    assert [r[1] for r in table] == ["5", "5", "10", "10", "50", "50"]
    reaches = {r[0]: r[4] for r in table}
    assert reaches["ddim, 50 steps, eta 0"] == "reference"
    assert reaches["dpmpp-2m, 10 steps"] == "yes" and reaches["dpmpp-2m, 5 steps"] == "no"
    assert "Fewest calls that reach the reference's FID: **10** (dpmpp-2m, 10 steps), " \
           "4.75x its images/s." in text
    # rows written before network_calls: the steps option counts the calls
    for r in rows:
        del r["network_calls"]
    assert "**10** (dpmpp-2m, 10 steps)" in to_markdown(frontier_table(rows))
    # one variant per model, or several at one count of calls: no frontier
    assert frontier_table(rows[:1]) == []
    assert frontier_table([rows[1], rows[3]]) == []


def test_unconditional_rows_leave_out_the_metrics_that_need_labels():
    from zoo.bench.runner import metrics_for

    names = ["fid", "class_accuracy", "intra_fid", "class_tv"]
    assert metrics_for(names, None) == ["fid", "class_tv"]
    assert metrics_for(names, [0, 1, 2]) == names


# -- hostile names: the report shows them as text ----------------------------------------------

SUITE = "s\n## Metrics <script>alert(1)</script> [x](javascript:alert(1))"
MODEL = "<img src=x onerror=alert(1)>[m](JaVaScRiPt:alert(2))"
DATASET = "[d](data:text/html,<script>alert(3)</script>)"


def write_hostile_run(d: Path) -> Path:
    """A run whose suite name, a model id and a dataset name carry script and links."""
    rows = [r for r in make_rows() if r["dataset"] == "mnist"]
    for r in rows:
        r.update(suite=SUITE, dataset=DATASET)
        if r["model"] == "gan-dcgan":
            r.update(model=MODEL, device="cpu <script>alert(4)</script>")
    write_run(d, rows, losses=False)
    write_report(d)
    return d


def test_report_md_shows_hostile_names_as_text(tmp_path):
    md = (write_hostile_run(tmp_path / "run") / "report.md").read_text()
    assert "<script" not in md and "<img" not in md
    assert not re.search(r"(?<!\\)\]\((javascript|data):", md, re.I)
    assert [ln for ln in md.splitlines() if ln.startswith("## ")][0] == "## Summary"
    assert md.splitlines()[0] == ("# Benchmark report: s ## Metrics &lt;script&gt;alert(1)"
                                  "&lt;/script&gt; \\[x\\](javascript:alert(1))")
    assert "&lt;img src=x onerror=alert(1)&gt;\\[m\\](JaVaScRiPt:alert(2))" in md


def test_a_row_image_path_outside_the_run_is_never_embedded(tmp_path):
    """A results row naming an image by an absolute path or through ``..`` (a hand-edited or
    planted results.jsonl) is reported missing: report.html embeds only files of the run."""
    from PIL import Image

    secret = tmp_path / "secret.png"
    Image.new("L", (8, 8), 7).save(secret)
    rows = [r for r in make_rows() if r["dataset"] == "mnist"][:2]
    rows[0]["grid"] = str(secret)
    rows[1]["grid"] = "../secret.png"
    rows[1]["memorization_panel"] = str(secret)
    d = write_run(tmp_path / "run", rows, grids=False, losses=False)
    write_report(d)
    md, page = (d / "report.md").read_text(), (d / "report.html").read_text()
    assert "secret.png` is missing" in md and md.count("is missing") == 2
    assert "closest to training" not in md and "](../secret.png)" not in md
    assert page.count("data:image/png") == md.count("![")
