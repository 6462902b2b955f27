"""Progress of the long commands as a user sees it: a moving bar on a terminal, a line
every ``$ZOO_PROGRESS_INTERVAL`` seconds in a log, nothing with ``--quiet``; results on
stdout either way."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import numpy as np
import pytest

from zoo import cli, progress

pytestmark = pytest.mark.usefixtures("cache_env")

#: a DDPM that trains and samples in about a second on a CPU core (100 sampling steps)
DDPM = ["--set", "channels=8", "--set", "norm_groups=4", "--set", "timesteps=100",
        "--set", "max_levels=2", "--set", "sample_n=0", "--batch-size", "16"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "tiny.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def run(images):
    out = images.parent / "run"
    assert cli.main(["train", "ddpm", "--dataset", str(images), "--steps", "2", "--out",
                     str(out), "--quiet", *DDPM]) == 0
    return out


@pytest.fixture
def fast_lines(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.1")


def _lines(text: str, start: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(start)]


def test_train_in_a_log_prints_a_line_every_interval(images, tmp_path, capsys, fast_lines):
    assert cli.main(["train", "ddpm", "--dataset", str(images), "--seconds", "1",
                     "--out", str(tmp_path / "r"), *DDPM]) == 0
    out, err = capsys.readouterr()
    lines = _lines(err, "train ddpm: ")
    assert len(lines) >= 3, err
    assert "/1 s (" in lines[-1] and "left" in lines[-1] and "loss=" in lines[-1], lines
    assert "img/s=" in lines[-1] and "step=" in lines[-1], lines
    assert out.startswith("trained ddpm for") and "train ddpm:" not in out


def test_sample_in_a_log_counts_sampler_steps(run, tmp_path, capsys, fast_lines):
    assert cli.main(["sample", str(run), "-n", "16", "-o", str(tmp_path / "s.png"),
                     "--set", "sampler=ddpm"]) == 0
    out, err = capsys.readouterr()
    lines = _lines(err, "sample ddpm: ")
    assert len(lines) >= 2, err
    assert all("/100 step (" in ln and "img=16/16" in ln for ln in lines), lines
    assert out.startswith("wrote 16 samples of ddpm (sampler ddpm, ")


def test_quiet_prints_no_progress(run, images, tmp_path, capsys, fast_lines):
    assert cli.main(["sample", str(run), "-n", "16", "-o", str(tmp_path / "s.png"),
                     "--quiet"]) == 0
    assert cli.main(["train", "ddpm", "--dataset", str(images), "--seconds", "0.5", "--quiet",
                     "--out", str(tmp_path / "r"), *DDPM]) == 0
    err = capsys.readouterr().err
    assert not _lines(err, "sample ddpm:") and not _lines(err, "train ddpm:"), err


def test_bench_in_a_log_says_entry_and_stage(tiny_suite, tmp_path, capsys, monkeypatch):
    """The lines name the entry; the job passes through every stage (which of them a line
    catches depends on how long each lasts, so the stages are read where they are set)."""
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.05")
    stages, real = [], progress.Progress.stage

    def stage(self, text):
        stages.append(text)
        real(self, text)

    monkeypatch.setattr(progress.Progress, "stage", stage)
    assert cli.main(["bench", str(tiny_suite()), "--out", str(tmp_path / "b"),
                     "--no-report"]) == 0
    lines = _lines(capsys.readouterr().err, "bench tiny")
    assert lines, "no progress line"
    assert all("mnist/vae-mlp (entry 1 of 1)" in ln for ln in lines), lines
    said = {s for s in ("train", "nll", "sample", "eval", "time")
            if any(t.endswith(f": {s}") and "mnist/vae-mlp (entry 1 of 1)" in t for t in stages)}
    assert said == {"train", "nll", "sample", "eval", "time"}, stages


def test_a_wrong_interval_is_one_line(run, monkeypatch, capsys):
    monkeypatch.setenv(progress.INTERVAL_ENV, "often")
    assert cli.main(["sample", str(run), "-n", "4"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("zoo: error: $ZOO_PROGRESS_INTERVAL must be a positive number")


def test_train_on_a_pseudo_terminal_draws_a_moving_bar(images, tmp_path):
    """A pseudo-terminal of size 0x0 (as a CI runner's) still gets a bar, not an empty line."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo", "train", "ddpm", "--dataset", str(images), "--steps",
         "20", "--out", str(tmp_path / "r"), *DDPM], stdout=subprocess.PIPE, stderr=child,
        env={**os.environ, "ZOO_OFFLINE": "1"})
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert proc.wait(timeout=120) == 0
    frames = [f for f in seen.decode().split("\r") if "train ddpm:" in f]
    counts = {f.split("|")[2].split()[0] for f in frames if f.count("|") >= 2}
    assert "20/20" in counts and len(counts) >= 2, seen
