"""zoo.progress: the one progress display (a bar on a terminal, periodic lines elsewhere,
nothing when off), the estimate before a long job, and the sampling loops it counts."""

from __future__ import annotations

import io
import time

import pytest
from helpers import capture_on_cpu, tiny_ddpm

import zoo
from zoo import progress
from zoo.errors import ConfigError
from zoo.progress import Progress


@pytest.fixture
def fast_lines(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.05")


def test_a_terminal_bar_moves_per_unit():
    out = io.StringIO()
    with Progress("job", 3, "step", enabled=True, terminal=True, file=out) as job:
        assert job.mode == progress.BAR
        for _ in range(3):
            time.sleep(0.12)  # past tqdm's shortest refresh interval
            job.update()
            job.note(loss=0.5)
    frames = out.getvalue().split("\r")
    shown = [c for c in ("1/3", "2/3", "3/3") if any(c in f for f in frames)]
    assert shown == ["1/3", "2/3", "3/3"], frames
    assert "loss=0.5" in out.getvalue()


def test_a_non_terminal_gets_a_line_every_interval(fast_lines):
    out = io.StringIO()
    with Progress("job", 4, "step", enabled=True, terminal=False, file=out) as job:
        assert job.mode == progress.LINES
        job.update()
        job.stage("warming up")
        time.sleep(0.4)  # no work meanwhile: the lines still come
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3, lines
    assert lines[0].startswith("job: 1/4 step (25%), 0 s elapsed, about"), lines
    assert lines[0].endswith("warming up")
    n = len(lines)
    time.sleep(0.2)
    assert len(out.getvalue().splitlines()) == n  # closed: no more lines


def test_nested_jobs_say_what_the_outer_ones_do(fast_lines):
    out = io.StringIO()
    with Progress("bench tiny", 2, "row", enabled=True, terminal=False, file=out) as outer:
        outer.stage("mnist/vae (entry 1 of 1): train")
        with Progress("train vae", 10, "step", file=out, terminal=False) as inner:
            inner.update(4)
            time.sleep(0.2)
    line = out.getvalue().splitlines()[0]
    assert line.startswith("bench tiny 0/2 row (mnist/vae (entry 1 of 1): train) | train vae: "
                           "4/10 step (40%)"), line


def test_off_prints_nothing_and_none_follows_the_enclosing_job(fast_lines):
    out = io.StringIO()
    with Progress("quiet", 4, enabled=False, file=out, terminal=True) as job:
        job.update(4)
        with Progress("inner", 2, file=out, terminal=True) as inner:
            assert inner.mode == progress.OFF
    assert out.getvalue() == ""
    # outside any job: the library's default is a bar on a terminal and nothing elsewhere
    assert progress.resolve(None, terminal=True) == progress.BAR
    assert progress.resolve(None, terminal=False) == progress.OFF
    with progress.default(True):  # what the CLI sets, unless --quiet
        assert progress.resolve(None, terminal=False) == progress.LINES
    with progress.default(False):
        assert progress.resolve(None, terminal=True) == progress.OFF


def test_an_estimate_before_the_rest_of_a_long_job(monkeypatch):
    monkeypatch.setattr(progress, "ESTIMATE_SECONDS", 0.05)
    out = io.StringIO()
    with Progress("nll", 100, "img", enabled=True, terminal=False, file=out,
                  estimate="nll: about {time} for 100 images") as job:
        time.sleep(0.02)
        job.update(10)  # 0.02 s for 10 of 100: about 0.2 s left
        job.update(10)
    (line,) = out.getvalue().splitlines()
    assert line.startswith("nll: about 0 s for 100 images"), line


def test_the_interval_setting_is_checked(monkeypatch):
    monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)
    assert progress.interval() == progress.DEFAULT_INTERVAL == 30
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv(progress.INTERVAL_ENV, bad)
        with pytest.raises(ConfigError, match=progress.INTERVAL_ENV):
            progress.interval()
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.5")
    assert progress.interval() == 0.5


def test_sampling_counts_diffusion_steps_over_all_batches():
    model = tiny_ddpm()  # 20 timesteps: the ancestral sampler takes 20 steps
    with Progress("sample", 10, "img", enabled=True, steps=True, file=io.StringIO(),
                  terminal=False) as job:
        model.sample(10, batch_size=4, sampler="ddpm")  # three loops of 20 steps
        job.drew(10)
    assert (job.unit, job.n, job.total) == ("step", 60, 60)


def test_sampling_counts_the_tokens_of_an_autoregressive_model():
    model = zoo.create("ar-transformer", image_shape=(1, 4, 4), dim=32, heads=4, depth=1).eval()
    for cache in (True, False):
        with Progress("sample", 3, "img", enabled=True, steps=True, file=io.StringIO(),
                      terminal=False) as job:
            model.sample(3, use_cache=cache)
            job.drew(3)
        assert (job.unit, job.n, job.total) == ("step", 16, 16), cache


def test_a_job_that_counts_no_steps_ignores_sampling_loops():
    model = tiny_ddpm()
    with Progress("train", 5, "step", enabled=True, file=io.StringIO(), terminal=False) as job:
        model.sample(2)  # a sample grid drawn during training
    assert (job.unit, job.n, job.total) == ("step", 0, 5)


@pytest.mark.parametrize("family", ["diffusion", "autoregressive"])
def test_a_replayed_cuda_graph_counts_its_whole_loop(family, monkeypatch):
    """The capture and its warm-up count nothing (``uncounted``, as ``zoo.nn.graphs.capture``
    runs them); each replay counts one loop (the stand-in graph of test_e2e_fast_path)."""
    if family == "diffusion":
        import zoo.models.diffusion.loop as module
        model, steps = tiny_ddpm(), 20
    else:
        import zoo.models.autoregressive as module
        model, steps = zoo.create("ar-transformer", image_shape=(1, 4, 4), dim=32, heads=4,
                                  depth=1).eval(), 16

    def capture(loop, warmup, device):
        with progress.uncounted():
            return capture_on_cpu(loop, warmup, device)

    monkeypatch.setattr(module, "capture", capture)
    monkeypatch.setattr(module, "graph_mode", lambda value, device: (value is True, False))
    with Progress("sample", 6, "img", enabled=True, steps=True, file=io.StringIO(),
                  terminal=False) as job:
        options = {"sampler": "ddpm"} if family == "diffusion" else {}
        model.sample(6, batch_size=3, cuda_graph=True, **options)  # one capture, two replays
        job.drew(6)
    assert (job.unit, job.n, job.total) == ("step", 2 * steps, 2 * steps)


def test_a_clock_drives_a_time_budget_and_its_time_left():
    spent = [100.0]
    with Progress("choose", 900, "s", enabled=False, clock=lambda: spent[0]) as p:
        assert p.left() == 800 and p.n == 100
        spent[0] = 950.0  # over the budget: nothing left, the count stops at the total
        assert p.left() == 0 and p.n == 900
        assert "0 s left" in p.line()


def test_a_clocked_outer_job_shows_the_time_spent_while_an_inner_job_runs():
    """`choose DATA 16/900 s | train ...`: the outer count moves with the clock, not only
    when the outer job is next told something."""
    spent = [16.0]
    with Progress("choose", 900, "s", enabled=False, clock=lambda: spent[0]) as p:
        assert p.outer().startswith("choose 16/900 s")
        spent[0] = 75.0
        assert p.outer().startswith("choose 75/900 s")
