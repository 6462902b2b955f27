"""Hostile files and file-system faults: suite values that would
write outside --out, one writer per run and bench directory, resuming after a kill, a full
disk while saving, malformed run.json, losses that explode, budgets that never end."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import tiny_suite

import zoo
from zoo import data
from zoo.bench import runner
from zoo.bench.suite import Variant, load_suite
from zoo.cli import main
from zoo.core import CheckpointError, ConfigError, TrainingDiverged, atomic_write, save_torch
from zoo.errors import LockHeld
from zoo.files import open_append
from zoo.images import save_grid
from zoo.locks import LOCK_FILE, DirLock
from zoo.train import CHECKPOINT_FILE, MODEL_FILE, TrainConfig, Trainer, load_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist_subset() -> torch.Tensor:
    x, _ = data.load("mnist", "train")
    return x[:1024]


def _trainer(out, images, **options):
    torch.manual_seed(0)
    model = zoo.create("vae-mlp", dataset="mnist", hidden=32)
    opts = dict(batch_size=64, checkpoint_every=5, log_every=2)
    opts.update(options)
    return Trainer(model, "mnist", out, images=images, progress=False, **opts)


def _one_error_line(err: str, *needles: str, alone: bool = True) -> str:
    """The one error line of stderr; ``alone``: and nothing else (``zoo train`` prints what
    it trains first)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if not alone:
        lines = [ln for ln in lines if not ln.startswith("training ")]
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- 1. suite values that reach a path ------------------------------------------------------------
#: the tiny suite cut down: no name, seed, device or extractor (the defaults)
_SUITE = {"name": None, "seed": None, "device": None,
          "defaults": {"budget": {"steps": 1}, "batch_size": 8},
          "evaluation": {"n_samples": 16, "n_reference": 100, "metrics": ["fid"],
                         "nll_images": 0, "extractor": None, "batch_size": None},
          "models": [{"name": "vae-mlp", "config": {"hidden": 16}}]}
SUITE = tiny_suite(**_SUITE)  # ends in the model's table: a line appended is one of its keys


@pytest.mark.parametrize("bad", ["../../../x", "/tmp/x", "a/b", "a\\\\b", "..", ".", "",
                                 "a\\u0000b"])
def test_suite_refuses_a_model_id_that_climbs_out(tmp_path, bad):
    path = tmp_path / "s.toml"
    path.write_text(SUITE + f'id = "{bad}"\n')
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    assert str(e.value).startswith(f"{path}: models[0].id: "), e.value
    assert "cannot name a folder under --out" in str(e.value)


def test_suite_refuses_a_dataset_label_that_climbs_out(tmp_path):
    (tmp_path / "images").mkdir()
    path = tmp_path / "s.toml"
    path.write_text(tiny_suite(**{**_SUITE, "datasets": [str(tmp_path / "images" / "..")]}))
    with pytest.raises(ConfigError) as e:  # the folder's name, the row's label, is ".."
        load_suite(path)
    assert str(e.value).startswith(f"{path}: datasets[0]: "), e.value


class _Hostile:
    def __init__(self, text):
        self.text = text

    def label(self):
        return self.text


@pytest.mark.parametrize("label", ["../../../etc/passwd", "/abs", "..", ".", "a\\..\\b", ""])
def test_sampler_slug_is_a_plain_file_name(tmp_path, label):
    """A grid's file name comes from the sampler's label: it never climbs out."""
    name = f"{Variant({}, sampler=_Hostile(label)).slug}.png"
    assert "/" not in name and "\\" not in name and name not in (".", "..")
    out = tmp_path / "out"
    grid = out / "grids" / "mnist" / "m" / name
    assert runner._inside(out, grid) == grid
    assert os.path.dirname(os.path.abspath(grid)) == str(out / "grids" / "mnist" / "m")


def test_runner_refuses_to_write_outside_out(tmp_path, monkeypatch):
    """Defence in depth: a suite whose id slipped past the suite checks is refused by the
    runner before it creates or deletes anything."""
    path = tmp_path / "s.toml"
    path.write_text(SUITE)
    suite = load_suite(path)
    suite.models[0].id = "../../../../escaped"  # out/runs/mnist/ + 4 levels up: tmp_path
    monkeypatch.setattr(runner, "load_suite", lambda p: suite)
    victim = tmp_path / "escaped"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    out = tmp_path / "o" / "out"
    with pytest.raises(ConfigError, match="outside the output directory"):
        runner.run_suite(path, out, progress=False)
    assert (victim / "keep.txt").read_text() == "mine"  # not rmtree'd as a stale run dir
    for bad in (out / "runs" / "mnist" / ".." / ".." / ".." / "x", Path("/etc/x"), out):
        with pytest.raises(ConfigError):
            runner._inside(out, bad)


# -- 2. one writer per directory ------------------------------------------------------------------
HOLD = textwrap.dedent("""
    import sys
    from zoo.locks import DirLock
    lock = DirLock(sys.argv[1], "run directory").acquire()
    print("ready", flush=True)
    sys.stdin.read()
""")


def _holder(directory: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.slow
def test_second_writer_is_refused_and_a_dead_holder_is_taken_over(tmp_path, mnist_subset,
                                                                   capsys):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        with pytest.raises(LockHeld) as e:
            DirLock(run).acquire()
        msg = str(e.value)
        assert f"pid {proc.pid} on {socket.gethostname()} since " in msg and "\n" not in msg
        with pytest.raises(LockHeld, match=f"pid {proc.pid}"):
            _trainer(run, mnist_subset, steps=2).fit()
        assert not (run / CHECKPOINT_FILE).exists()
        proc.kill()  # kill -9: its file stays, the kernel drops its flock
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (run / LOCK_FILE).is_file()
    capsys.readouterr()
    _trainer(run, mnist_subset, steps=2).fit()
    err = capsys.readouterr().err
    assert f"taking over the stale lock {run / LOCK_FILE} of pid {proc.pid}" in err
    assert not (run / LOCK_FILE).exists()  # released after fit


def test_two_lock_attempts_in_one_process(tmp_path):
    first = DirLock(tmp_path / "d").acquire()
    with pytest.raises(LockHeld, match=f"pid {os.getpid()} on .* since .*is writing"):
        DirLock(tmp_path / "d").acquire()
    first.release()
    assert not (tmp_path / "d" / LOCK_FILE).exists()
    with DirLock(tmp_path / "d"):
        assert json.loads((tmp_path / "d" / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / LOCK_FILE).write_text(json.dumps({"pid": 99999999, "host": socket.gethostname(),
                                           "since": "2020-01-01T00:00:00+00:00"}))
    with DirLock(d):
        err = capsys.readouterr().err
        assert "taking over the stale lock" in err and "pid 99999999" in err
        assert "since 2020-01-01" in err and "has ended" in err
    (d / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "x"}))
    with pytest.raises(LockHeld, match=f"pid 1 on elsewhere since x.*delete {d / LOCK_FILE}"):
        DirLock(d).acquire()


@pytest.mark.slow
@pytest.mark.suite
def test_training_and_bench_hold_their_locks(tmp_path, mnist_subset, capsys):
    seen = []

    def check(trainer):
        with pytest.raises(LockHeld):
            DirLock(trainer.out).acquire()
        seen.append(trainer.step)

    t = _trainer(tmp_path / "run", mnist_subset, steps=2)
    t.hook = check
    t.fit()
    assert seen == [1, 2] and not (tmp_path / "run" / LOCK_FILE).exists()

    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    out = tmp_path / "bench"
    with DirLock(out):
        assert main(["bench", str(suite), "--out", str(out), "--no-report"]) == 2
        _one_error_line(capsys.readouterr().err, str(out), "is in use", f"pid {os.getpid()}")
        assert not (out / "results.jsonl").exists()
        assert main(["train", "vae-mlp", "--dataset", "mnist", "--steps", "1", "--set",
                     "hidden=16", "--out", str(out)]) == 2
        _one_error_line(capsys.readouterr().err, "is in use", alone=False)

    events = []

    def hook(event, **info):
        if event in ("train", "evaluate"):
            with pytest.raises(LockHeld):
                DirLock(out).acquire()
            events.append(event)

    runner.run_suite(suite, out, progress=False, hook=hook)
    assert events == ["train", "evaluate"] and not (out / LOCK_FILE).exists()


# -- 2b. symbolic links planted in --out ----------------------------------------------------------
#: every way zoo writes a file in a run or output directory
WRITERS = {
    "atomic_write": lambda p: atomic_write(p, lambda tmp: Path(tmp).write_text("zoo")),
    "save_torch": lambda p: save_torch({"step": 1}, p),
    "save_grid": lambda p: save_grid(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), p, nrow=1),
    "append_row": lambda p: runner.append_row(p, {"step": 1}),
    "open_append": lambda p: open_append(p).close(),
    "lock": lambda p: DirLock(p.parent).acquire(),
}


@pytest.mark.parametrize("dangling", [False, True], ids=["existing", "dangling"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_no_writer_follows_a_planted_link(tmp_path, writer, dangling):
    """A symbolic link where zoo writes a file is refused, naming it: the file it points to
    (outside --out) is neither created, truncated nor appended to, and no temporary file is
    left behind."""
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    if not dangling:
        victim.write_text("mine")
    link = out / (LOCK_FILE if writer == "lock" else "file")
    link.symlink_to(victim)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(link))} is a symbolic link"):
        WRITERS[writer](link)
    assert victim.read_text() == "mine" if not dangling else not victim.exists()
    assert [p.name for p in out.iterdir()] == [link.name]


def test_train_and_bench_refuse_links_planted_in_out(tmp_path, mnist_subset, capsys):
    """Through the CLI, one line each: a linked lock file (zoo train, zoo bench), a linked
    suite.toml (zoo bench copies its suite there); and a resumed run's linked losses.csv."""
    victim = tmp_path / "victim"
    victim.write_text("mine\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).symlink_to(victim)
    assert main(["train", "vae-mlp", "--dataset", "mnist", "--steps", "1", "--set",
                 "hidden=16", "--out", str(run)]) == 2
    _one_error_line(capsys.readouterr().err, f"{run / LOCK_FILE} is a symbolic link",
                    alone=False)
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "suite.toml").symlink_to(victim)
    assert main(["bench", str(suite), "--out", str(bench), "--no-report"]) == 2
    _one_error_line(capsys.readouterr().err, f"{bench / 'suite.toml'} is a symbolic link")
    assert victim.read_text() == "mine\n" and not (bench / LOCK_FILE).exists()

    _trainer(tmp_path / "r", mnist_subset, steps=2).fit()
    (tmp_path / "r" / "losses.csv").unlink()
    (tmp_path / "r" / "losses.csv").symlink_to(victim)
    with pytest.raises(ConfigError, match="losses.csv is a symbolic link"):
        Trainer.resume(tmp_path / "r", images=mnist_subset, steps=4, progress=False).fit()
    assert victim.read_text() == "mine\n" and not (tmp_path / "r" / LOCK_FILE).exists()


# -- 3. resume after a kill -----------------------------------------------------------------------
class Killed(Exception):
    """Not caught by the Trainer: it stops the run without the final save, like kill -9."""


def _steps(path: Path) -> list[int]:
    return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:]]


def test_resume_after_a_kill_logs_no_step_twice(tmp_path, mnist_subset):
    out = tmp_path / "run"
    t = _trainer(out, mnist_subset, steps=12)

    def kill(trainer):
        if trainer.step == 8:
            raise Killed

    t.hook = kill
    with pytest.raises(Killed):
        t.fit()
    assert torch.load(out / CHECKPOINT_FILE, weights_only=True)["step"] == 5
    assert _steps(out / "losses.csv") == [2, 4, 6, 8]
    with (out / "losses.csv").open("a") as f:
        f.write("1")  # a row cut short by the kill
    (out / "eval.csv").write_text("step,fid,n,extractor,extractor_sha256\n"
                                  "4,90.5,16,x,abc\n8,80.1,16,x,abc\n")
    Trainer.resume(out, images=mnist_subset, progress=False).fit()
    assert _steps(out / "losses.csv") == [2, 4, 6, 8, 10, 12]
    assert _steps(out / "eval.csv") == [4]


# -- 4. saving ------------------------------------------------------------------------------------
def test_atomic_write_syncs_the_file_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(a, b):
        events.append("replace")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / "f.txt", lambda tmp: Path(tmp).write_text("new"))
    assert events == ["fsync file", "replace", "fsync dir"]
    assert (tmp_path / "f.txt").read_text() == "new"


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, mnist_subset,
                                                              monkeypatch):
    out = tmp_path / "run"
    t = _trainer(out, mnist_subset, steps=12)

    def fill_disk(trainer):
        if trainer.step == 6:
            monkeypatch.setattr(torch, "save", _no_space)

    t.hook = fill_disk
    with pytest.raises(CheckpointError) as e:
        t.fit()
    msg = str(e.value)
    assert "saving step 10 failed" in msg and "No space left on device" in msg
    assert "the previous checkpoint (step 5) is kept" in msg and "\n" not in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__
    monkeypatch.undo()
    assert torch.load(out / CHECKPOINT_FILE, weights_only=True)["step"] == 5
    load_run(out)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not (out / LOCK_FILE).exists()
    Trainer.resume(out, images=mnist_subset, progress=False).fit()  # and it resumes


def test_disk_full_through_the_cli_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "save", _no_space)
    out = tmp_path / "run"
    assert main(["train", "vae-mlp", "--dataset", "mnist", "--steps", "2", "--set",
                 "hidden=16", "--out", str(out)]) != 0
    _one_error_line(capsys.readouterr().err, "No space left on device",
                    f"cannot write {out / MODEL_FILE}", "no checkpoint had been written yet",
                    alone=False)


def test_a_real_write_failure_is_the_oserror_behind_it(tmp_path):
    """torch's writer reports a failed write as an opaque RuntimeError; save_torch raises the
    OSError (here a file-size limit, EFBIG, which a full disk's ENOSPC takes the same way)."""
    import resource

    (tmp_path / "m.pt").write_text("previous")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError) as e:
            save_torch({"w": torch.zeros(100_000)}, tmp_path / "m.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert e.value.errno == errno.EFBIG
    assert (tmp_path / "m.pt").read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


# -- 5. run.json ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_subset):
    out = tmp_path_factory.mktemp("runjson") / "run"
    _trainer(out, mnist_subset, steps=2).fit()
    return out


MALFORMED = [
    ("{not json", "is not valid JSON (Expecting property name"),
    ('["vae-mlp", "mnist"]', "holds a list, not an object"),
    ('"vae-mlp"', "holds a string, not an object"),
    ('{"dataset": "mnist", "train_config": {}}', "lacks the key 'model'"),
    ('{"model": 3, "dataset": "mnist", "train_config": {}}', "model must be a string"),
    ('{"model": "vae-mlp", "dataset": null, "train_config": {}}', "dataset must be a string"),
    ('{"model": "vae-mlp", "dataset": "mnist", "train_config": [1]}',
     "train_config must be an object"),
    ('{"model": "vae-mlp", "dataset": "mnist", "train_config": {}, "image_shape": [1, 28]}',
     "image_shape must be 3 positive integers"),
]


@pytest.mark.parametrize("text, what", MALFORMED)
@pytest.mark.parametrize("command", ["nll", "eval", "resume"])
def test_malformed_run_json_is_one_line(trained, tmp_path, capsys, text, what, command):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "run.json").write_text(text)
    args = {
        "nll": ["nll", str(run), "--n", "8"],
        "eval": ["eval", str(run), "-n", "16", "--metrics", "fid"],
        "resume": ["train", "vae-mlp", "--dataset", "mnist", "--steps", "4", "--out", str(run),
                   "--resume"],
    }[command]
    assert main(args) != 0
    _one_error_line(capsys.readouterr().err, str(run / "run.json"), what)


@pytest.mark.parametrize("change, what", [
    ({"steps": "ten"}, "steps must be an integer"),
    ({"seconds": -1}, "seconds must be a finite number > 0"),
    ({"widht": 3}, "unknown option(s) widht"),
])
def test_bad_train_config_in_run_json_is_one_line(trained, tmp_path, capsys, change, what):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    info = json.loads((run / "run.json").read_text())
    info["train_config"].update(change)
    (run / "run.json").write_text(json.dumps(info))
    assert main(["train", "vae-mlp", "--dataset", "mnist", "--steps", "4", "--out", str(run),
                 "--resume"]) != 0
    _one_error_line(capsys.readouterr().err, f"{run / 'run.json'}: train_config: ", what)
    with pytest.raises(CheckpointError, match="train_config"):
        Trainer.resume(run)


# -- 6. losses that explode -----------------------------------------------------------------------
def test_gan_at_a_huge_learning_rate_stops_at_max_loss(tmp_path, mnist_subset):
    def gan(out, **options):
        torch.manual_seed(0)
        model = zoo.create("gan-mlp", dataset="mnist", lr=1e6, g_hidden=(32,), d_hidden=(32,),
                           latent_dim=8)
        return Trainer(model, "mnist", out, images=mnist_subset, progress=False, steps=6,
                       batch_size=32, checkpoint_every=2, **options)

    # without the guard it trains on: the losses are huge (~1e14) but finite
    summary = gan(tmp_path / "off", max_loss=None).fit()
    assert summary["steps"] == 6
    with pytest.raises(TrainingDiverged) as e:
        gan(tmp_path / "on").fit()
    msg = str(e.value)
    assert re.search(r"loss_[dg] reached \S+e\+\d+, beyond max_loss 1e\+06 at step \d", msg), msg
    assert "training stopped and no checkpoint had been written yet" in msg
    t = gan(tmp_path / "late")

    def blow_up(trainer):  # from step 3 on the limit is below the losses
        if trainer.step == 2:
            trainer.config.max_loss = 1e-3

    t.config.max_loss = 1e30
    t.hook = blow_up
    with pytest.raises(TrainingDiverged, match=r"at step 3.*last good checkpoint \(step 2\)"):
        t.fit()
    assert torch.load(tmp_path / "late" / CHECKPOINT_FILE, weights_only=True)["step"] == 2


# -- 7. budgets and options -----------------------------------------------------------------------
@pytest.mark.parametrize("options, what", [
    ({"seconds": float("nan")}, "seconds must be a finite number > 0, got nan"),
    ({"seconds": float("inf")}, "seconds must be a finite number > 0, got inf"),
    ({"seconds": 0}, "seconds must be a finite number > 0"),
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"steps": -3}, "steps must be >= 1"),
    ({"steps": 2.5}, "steps must be an integer (or None), got float"),
    ({"steps": True}, "steps must be an integer"),
    ({"batch_size": "8"}, "batch_size must be an integer, got str"),
    ({"seed": 2**64}, "seed must be an integer in"),
    ({"grad_clip": -1.0}, "grad_clip must be a finite number >= 0"),
    ({"grad_clip": float("nan")}, "grad_clip must be a finite number >= 0"),
    ({"ema_decay": float("nan")}, "ema_decay must be in [0, 1)"),
    ({"max_loss": 0.0}, "max_loss must be > 0"),
    ({"max_loss": float("nan")}, "max_loss must be > 0"),
    ({"checkpoint_every": 0}, "checkpoint_every and log_every must be >= 1"),
    ({"log_every": 1.5}, "log_every must be an integer"),
    ({"amp": "yes"}, "amp must be true or false"),
    ({"device": 0}, "device must be a string"),
])
def test_training_options_are_checked(options, what):
    config = TrainConfig(**{"steps": 10, **options})
    with pytest.raises(ConfigError) as e:
        config.validate()
    assert what in str(e.value), e.value


@pytest.mark.parametrize("budget, what", [
    (["--seconds", "nan"], "seconds must be a finite number > 0, got nan"),
    (["--seconds", "inf"], "got inf"),
    (["--steps", "0"], "steps must be >= 1, got 0"),
    (["--steps", "5", "--set", "grad_clip=-1"], "grad_clip"),
])
def test_budgets_through_the_cli(tmp_path, capsys, budget, what):
    out = tmp_path / "run"
    assert main(["train", "vae-mlp", "--dataset", "mnist", "--set", "hidden=16",
                 "--out", str(out), *budget]) != 0
    _one_error_line(capsys.readouterr().err, what, alone=False)
    assert not (out / CHECKPOINT_FILE).exists()


def test_suite_train_options_are_checked_at_load(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE + "train = { grad_clip = -1.0 }\n")
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    assert str(e.value).startswith(f"{path}: models[0].train: ") and "grad_clip" in str(e.value)
