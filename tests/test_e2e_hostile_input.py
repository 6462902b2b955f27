"""Hostile input: corrupt checkpoints, out-of-range counts and options, sizes past memory.

Each case must be refused with one line (``zoo: error: ...`` and a non-zero exit from the
CLI, a ZooError from Python), before anything is lost or allocated.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo import cli, data
from zoo.core import CheckpointError, ConfigError, DataError
from zoo.errors import SettingError
from zoo.images import MAX_GRID_IMAGES, make_grid, save_grid
from zoo.limits import MEMORY_ENV, memory_limit
from zoo.options import check_range, option_number
from zoo.train import CHECKPOINT_FILE, MODEL_FILE, Trainer, load_run


def run_cli(capsys, *args) -> tuple[int, str]:
    """``zoo ARGS`` in this process: (exit code, the one stderr line); fails unless the
    command failed with exactly one line of stderr, a ``zoo: error:``."""
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code != 0, f"zoo {' '.join(map(str, args))} succeeded"
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), err
    return code, lines[0]


@pytest.fixture(scope="module")
def subset():
    x, _ = data.load("mnist", "train")
    return x[:256]


@pytest.fixture(scope="module")
def run(tmp_path_factory, subset):
    """A 3-step vae-mlp run (EMA on) with its checkpoint.pt and model.pt."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    torch.manual_seed(0)
    model = zoo.create("vae-mlp", dataset="mnist", hidden=16)
    Trainer(model, "mnist", out, images=subset, steps=3, batch_size=32, progress=False).fit()
    return out


# -- model files -------------------------------------------------------------------------------


def _model_ckpt(run) -> dict:
    return torch.load(run / MODEL_FILE, weights_only=True)


def _config_with(**changes):
    def change(c):
        cfg = json.loads(c["config"])
        cfg.update(changes)
        c["config"] = json.dumps(cfg)
    return change


def _set_tensor(key, value):
    return lambda c: c["state_dict"].__setitem__(key, value)


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 28, 28), np.uint8))
    return buf.getvalue()


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((2, 28, 28), np.uint8))
    return buf.getvalue()


# (name, raw bytes or a change of the checkpoint dict, what the one-line error says)
MODEL_CORRUPTIONS = [
    ("random-bytes", b"\x01\x02" + np.random.default_rng(0).bytes(4000), "not a torch file"),
    ("csv", b"step,loss\n1,0.5\n", r"not a torch file \(it holds text\)"),
    ("npy", _npy_bytes(), "not a torch file.*numpy"),
    ("npz", _npz_bytes(), "not a torch file.*zip archive"),
    ("empty", b"", "not a torch file.*empty"),
    ("list", "list", "holds a list, not the dict"),
    ("class-not-a-model", lambda c: c.__setitem__("class", "zoo.models.vae:torch"),
     "not a zoo model class"),
    ("class-missing", lambda c: c.__setitem__("class", "zoo.models.vae:VAE.nothing"),
     "does not have"),
    ("class-outside", lambda c: c.__setitem__("class", "os:system"), "not a zoo model"),
    ("hidden-negative", _config_with(hidden=-5), "invalid config: hidden must be >= 1"),
    ("hidden-zero", _config_with(hidden=0), "invalid config: hidden must be >= 1"),
    ("hidden-absurd", _config_with(hidden=10**9), "invalid config: .*memory limit"),
    ("hidden-text", _config_with(hidden="abc"), "hidden must be an integer"),
    ("lr-nan", _config_with(lr=math.nan), "lr must be finite"),
    ("lr-zero", _config_with(lr=0), "lr must be > 0"),
    ("config-not-json", lambda c: c.__setitem__("config", "{hidden"), "invalid config"),
    ("config-missing", lambda c: c.pop("config"), "no 'config' entry"),
    ("config-deep", lambda c: c.__setitem__("config", "[" * 100_000 + "]" * 100_000),
     "invalid config: the config JSON nests .* more than 32 levels deep"),
    ("config-deep-value", lambda c: c.__setitem__("config", json.dumps(
        {"hidden": json.loads("[" * 40 + "]" * 40)})), "more than 32 levels deep"),
    ("image-shape", lambda c: c.__setitem__("image_shape", [1, -28, 28]), "invalid config"),
    ("missing-tensor", lambda c: c["state_dict"].pop("encoder.1.weight"),
     r"1 missing \(the first: 'encoder.1.weight'\)"),
    ("unexpected-tensor", _set_tensor("extra.weight", torch.zeros(2)),
     r"1 unexpected \(the first: 'extra.weight'\)"),
    ("shape", _set_tensor("encoder.1.weight", torch.zeros(3, 3)),
     r"encoder.1.weight has shape \(3, 3\), expected \(16, 784\)"),
    ("dtype", _set_tensor("encoder.1.bias", torch.zeros(16, dtype=torch.long)),
     "encoder.1.bias has dtype torch.int64"),
    ("not-a-tensor", _set_tensor("encoder.1.bias", [0.0] * 16), "encoder.1.bias is a list"),
    ("nan-weights", lambda c: [v.fill_(math.nan) for v in c["state_dict"].values()],
     "non-finite weights .*the first in"),
    ("inf-weight", lambda c: c["state_dict"]["decoder.2.bias"].__setitem__(0, math.inf),
     "non-finite weights .*decoder.2.bias"),
]


def _write_corrupt(path, ckpt, corruption) -> None:
    if isinstance(corruption, bytes):
        path.write_bytes(corruption)
    elif corruption == "list":
        torch.save([1, 2, 3], path)
    else:
        c = copy.deepcopy(ckpt)
        corruption(c)
        torch.save(c, path)


@pytest.mark.parametrize("name,corruption,message", MODEL_CORRUPTIONS,
                         ids=[c[0] for c in MODEL_CORRUPTIONS])
def test_corrupt_model_file_is_one_line(run, tmp_path, capsys, name, corruption, message):
    path = tmp_path / "model.pt"
    _write_corrupt(path, _model_ckpt(run), corruption)
    with pytest.raises(CheckpointError, match=message):
        zoo.load(path)
    _, line = run_cli(capsys, "sample", path, "-o", tmp_path / "g.png")
    assert "model.pt" in line
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 10**30])
def test_seed_beyond_64_bits_is_one_line_naming_the_range(run, tmp_path, capsys, seed):
    """torch's generators take one 64-bit word: a larger seed was an OverflowError
    traceback from ``manual_seed``, in zoo train (--seed and --set seed) and zoo sample."""
    for args in (("train", "vae-mlp", "--dataset", "mnist", "--steps", 1, "--out",
                  tmp_path / "new", "--seed", seed),
                 ("train", "vae-mlp", "--dataset", "mnist", "--steps", 1, "--out",
                  tmp_path / "new", "--set", f"seed={seed}"),
                 ("sample", run, "-n", 4, "-o", tmp_path / "g.png", "--seed", seed)):
        _, line = run_cli(capsys, *args)
        assert "seed must be an integer in [-2**63, 2**64)" in line
    assert not (tmp_path / "new").exists() and not (tmp_path / "g.png").exists()


def test_truncated_checkpoint_says_so(run, tmp_path):
    raw = (run / MODEL_FILE).read_bytes()
    (tmp_path / "m.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        zoo.load(tmp_path / "m.pt")


def test_text_named_npy_is_not_a_numpy_file(tmp_path):
    path = tmp_path / "images.npy"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"not a \.npy file"):
        data.load(path)


# -- resuming ----------------------------------------------------------------------------------


def _opt(c):
    return c["optimizers"]["vae"]


def _param_state(c, i=0):
    return _opt(c)["state"][i]


RESUME_CORRUPTIONS = [
    ("exp-avg-shape", lambda c: _param_state(c).__setitem__("exp_avg", torch.zeros(2, 2)),
     r"exp_avg of parameter 0 is torch.float32 \(2, 2\), but the parameter is"),
    ("exp-avg-int", lambda c: _param_state(c).__setitem__(
        "exp_avg", torch.zeros(_param_state(c)["exp_avg"].shape, dtype=torch.long)),
     "exp_avg of parameter 0 is torch.int64"),
    ("exp-avg-nan", lambda c: _param_state(c, 1)["exp_avg_sq"].fill_(math.nan),
     "exp_avg_sq of parameter 1 .* holds NaN or Inf"),
    ("moment-missing", lambda c: _param_state(c).pop("exp_avg_sq"), "has no 'exp_avg_sq'"),
    ("moment-negative", lambda c: _param_state(c, 2)["exp_avg_sq"].view(-1)[0].fill_(-1e-3),
     r"exp_avg_sq of parameter 2 .* holds negative values"),
    ("step-shape", lambda c: _param_state(c).__setitem__("step", torch.zeros(3)),
     "step of parameter 0 is .*not one finite number"),
    ("groups", lambda c: _opt(c)["param_groups"].append(dict(_opt(c)["param_groups"][0])),
     "2 parameter groups, the model's optimizer 1"),
    ("group-size", lambda c: _opt(c)["param_groups"][0]["params"].pop(),
     r"parameter group 0 has 8 parameters, the model's 9"),
    ("lr-nan", lambda c: _opt(c)["param_groups"][0].__setitem__("lr", math.nan),
     "lr is nan, not a finite number"),
    ("lr-missing", lambda c: _opt(c)["param_groups"][0].pop("lr"),
     "parameter group 0 has no 'lr'"),
    ("unknown-param", lambda c: _opt(c)["state"].__setitem__(99, {}),
     "state for parameter 99, which no parameter group lists"),
    ("optimizer-missing", lambda c: c["optimizers"].pop("vae"),
     "no state for optimizer 'vae'"),
    ("ema-updates", lambda c: c["ema"].pop("updates"),
     r"EMA state has no update count \('updates'\)"),
    ("ema-shape", lambda c: c["ema"]["shadow"].__setitem__("encoder.1.weight", torch.zeros(1)),
     r"EMA weights do not match the model: encoder.1.weight has shape \(1,\)"),
    ("ema-nan", lambda c: c["ema"]["shadow"]["decoder.0.weight"].fill_(math.nan),
     "EMA weights hold NaN or Inf, the first in decoder.0.weight"),
    ("rng", lambda c: c.__setitem__("rng_cpu", "abc"), "RNG state 'rng_cpu' is not a uint8"),
    ("step-text", lambda c: c.__setitem__("step", "abc"), "step count is 'abc'"),
    ("step-missing", lambda c: c.pop("step"), r"it has no step count \('step'\)"),
    ("elapsed-nan", lambda c: c.__setitem__("elapsed", math.nan), "training time is nan"),
    ("model-nan", lambda c: c["model"]["state_dict"]["decoder.0.weight"].fill_(math.inf),
     "non-finite weights .*decoder.0.weight"),
    ("model-shape", lambda c: c["model"]["state_dict"].__setitem__(
        "decoder.0.bias", torch.zeros(7)), r"decoder.0.bias has shape \(7,\), expected \(16,\)"),
    ("model-missing", lambda c: c.pop("model"), "not a zoo model checkpoint"),
    ("list", "list", "holds a list, not the dict"),
    ("random-bytes", b"\x01\x02" + np.random.default_rng(1).bytes(100), "not a torch file"),
]


def _corrupt_run(run, tmp_path, corruption):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    state = torch.load(run / CHECKPOINT_FILE, weights_only=True)
    _write_corrupt(out / CHECKPOINT_FILE, state, corruption)
    return out


@pytest.mark.parametrize("name,corruption,message", RESUME_CORRUPTIONS,
                         ids=[c[0] for c in RESUME_CORRUPTIONS])
def test_corrupt_training_checkpoint_is_one_line(run, subset, tmp_path, capsys, name,
                                                 corruption, message):
    out = _corrupt_run(run, tmp_path, corruption)
    before = (out / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(CheckpointError, match=message):
        Trainer.resume(out, images=subset, steps=6, progress=False).fit()
    _, line = run_cli(capsys, "train", "vae-mlp", "--dataset", "mnist", "--steps", 6,
                      "--out", out, "--resume")
    assert "checkpoint.pt" in line
    assert (out / CHECKPOINT_FILE).read_bytes() == before  # nothing lost


@pytest.mark.slow
def test_moment_of_another_shape_never_reaches_fused_adam(run, tmp_path):
    """exp_avg replaced by zeros(2, 2) made fused Adam read out of bounds (exit 139)."""
    out = _corrupt_run(run, tmp_path, RESUME_CORRUPTIONS[0][1])
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "train", "vae-mlp", "--dataset", "mnist", "--steps", "6",
         "--out", str(out), "--resume"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "ZOO_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "exp_avg of parameter 0" in proc.stderr


def test_checkpoint_from_an_older_torch_still_resumes(run, subset, tmp_path):
    """Flags torch added later (foreach, decoupled_weight_decay) get torch's defaults."""
    def drop_flags(c):
        for g in _opt(c)["param_groups"]:
            for key in ("foreach", "decoupled_weight_decay", "differentiable"):
                g.pop(key, None)

    out = _corrupt_run(run, tmp_path, drop_flags)
    summary = Trainer.resume(out, images=subset, steps=5, progress=False).fit()
    assert summary["steps"] == 5


# -- model options -----------------------------------------------------------------------------


BAD_OPTIONS = [
    ("vae-mlp", "hidden", 0), ("vae-mlp", "hidden", -5), ("vae-mlp", "latent_dim", 0),
    ("vae-mlp", "lr", math.nan), ("vae-mlp", "lr", 0.0), ("vae-mlp", "lr", math.inf),
    ("vae-conv", "channels", (0,)), ("vae-conv", "conv_hidden", 0),
    ("vae-mlp", "binarize_threshold", 0),
    ("gan-mlp", "latent_dim", 0), ("gan-mlp", "lr", math.nan), ("gan-mlp", "lr", -1.0),
    ("gan-mlp", "gp_weight", math.nan), ("gan-dcgan", "channels", 0),
    ("ar-transformer", "dim", 0), ("ar-transformer", "depth", 0),
    ("ar-transformer", "lr", math.nan), ("ar-transformer", "betas", (0.9, math.nan)),
    ("ddpm", "channels", 0), ("ddpm", "lr", math.nan), ("ddpm", "lr", 0.0),
    ("ddpm", "norm_groups", 0), ("ddpm", "timesteps", 0),
]


@pytest.mark.parametrize("name,key,value", BAD_OPTIONS)
def test_bad_model_options_are_refused(name, key, value):
    with pytest.raises(ConfigError, match=key):
        zoo.create(name, image_shape=(1, 28, 28), **{key: value})


@pytest.mark.parametrize("name,key", [
    ("vae-mlp", "hidden"), ("gan-mlp", "latent_dim"), ("ar-transformer", "dim"),
    ("ddpm", "channels"), ("ddpm", "timesteps"),
])
def test_absurd_sizes_are_refused_before_allocating(name, key):
    with pytest.raises(ConfigError, match="memory limit"):
        zoo.create(name, image_shape=(1, 28, 28), **{key: 10**9})


def test_memory_limit_can_be_set(monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "0.001")
    assert memory_limit()[0] == int(0.001 * 2**30)
    with pytest.raises(ConfigError, match=r"weights \(653,608 parameters\).*ZOO_MAX_MEMORY_GB"):
        zoo.create("vae-mlp", dataset="mnist")
    monkeypatch.setenv(MEMORY_ENV, "lots")
    with pytest.raises(SettingError, match="ZOO_MAX_MEMORY_GB must be a number"):
        zoo.create("vae-mlp", dataset="mnist")


@pytest.mark.parametrize("value", ["1e300", "lots", "0", "nan", "inf", "-1"])
def test_a_bad_memory_limit_is_blamed_on_the_variable_not_a_file(run, tmp_path, capsys,
                                                                  monkeypatch, value):
    monkeypatch.setenv(MEMORY_ENV, value)
    with pytest.raises(SettingError) as e:
        load_run(run)
    assert str(e.value) == (f"$ZOO_MAX_MEMORY_GB must be a number of gigabytes > 0 and at "
                            f"most 1048576 (1 PiB), got {value!r}")
    _, line = run_cli(capsys, "sample", run, "-o", tmp_path / "g.png")
    assert "ZOO_MAX_MEMORY_GB" in line and MODEL_FILE not in line


def test_checking_the_size_changes_neither_weights_nor_rng():
    from zoo import registry
    from zoo.core import config_from_dict

    spec = registry.spec("gan-dcgan")
    torch.manual_seed(7)
    made = zoo.create("gan-dcgan", image_shape=(1, 28, 28), spectral_norm=True)
    after_create = torch.get_rng_state()
    torch.manual_seed(7)
    direct = spec.cls(config_from_dict(spec.cls.Config, {**spec.defaults, "spectral_norm": True}),
                      (1, 28, 28))
    assert torch.equal(after_create, torch.get_rng_state())
    a, b = made.state_dict(), direct.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_numbers_are_finite_and_in_range():
    for value in (math.nan, math.inf, "nan", "-inf", "1e400", 10**400):
        with pytest.raises(ConfigError, match="lr must be finite"):
            option_number(value, "lr")
    assert option_number("12345678901234567890", "n", int) == 12345678901234567890
    with pytest.raises(ConfigError, match="must be an integer"):
        option_number("10**9", "n", int)
    with pytest.raises(ConfigError, match=r"k must be >= 1 and <= 9, got 0"):
        check_range(0, "k", least=1, most=9)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        check_range(math.nan, "lr", above=0)


@pytest.mark.parametrize("setting,message", [
    ("lr=nan", "lr must be finite"), ("lr=0", "lr must be > 0"), ("lr=-1", "lr must be > 0"),
    ("hidden=0", "hidden must be >= 1"), ("hidden=-5", "hidden must be >= 1"),
    ("latent_dim=0", "latent_dim must be >= 1"), ("hidden=1000000000", "memory limit"),
    ("hidden=1e400", "must be"),
])
def test_train_refuses_bad_model_options(capsys, tmp_path, setting, message):
    _, line = run_cli(capsys, "train", "vae-mlp", "--dataset", "mnist", "--steps", 1,
                      "--out", tmp_path / "r", "--set", setting)
    assert message in line
    assert not (tmp_path / "r").exists()


# -- counts of the commands --------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["-n", "0"], "-n must be >= 1"), (["-n", "-3"], "-n must be >= 1"),
    (["--nrow", "0"], "--nrow must be >= 1"), (["--nrow", "-2"], "--nrow must be >= 1"),
    (["--scale", "0"], "--scale must be in 1..64"), (["--scale", "100000"], "--scale must be"),
    (["-n", "10000000"], "--npy"), (["-n", "5000"], f"more than a grid shows ({MAX_GRID_IMAGES})"),
    (["-n", "64", "--nrow", "100000"], "pixels"), (["--set", "decode=nan"], "decode"),
])
def test_sample_refuses_bad_counts(run, tmp_path, capsys, args, message):
    _, line = run_cli(capsys, "sample", run, "-o", tmp_path / "g.png", *args)
    assert message in line
    assert not (tmp_path / "g.png").exists()


def test_sample_draws_in_chunks_into_an_npy(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "SAMPLE_CHUNK", 7)
    code = cli.main(["sample", str(run), "-n", "20", "--seed", "3", "--scale", "1",
                     "-o", str(tmp_path / "g.png"), "--npy", str(tmp_path / "s")])
    assert code == 0
    assert "wrote 20 samples" in capsys.readouterr().out
    saved = np.load(tmp_path / "s.npy")  # .npy appended, as numpy.save does
    model = zoo.load(run)
    gen = torch.Generator().manual_seed(3)
    expected = torch.cat([model.sample(b, generator=gen) for b in (7, 7, 6)])
    assert saved.shape == (20, 1, 28, 28) and np.array_equal(saved, expected.numpy())
    assert Image.open(tmp_path / "g.png").size == (5 * 30 + 2, 4 * 30 + 2)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sample_refuses_an_npy_the_disk_cannot_hold(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 0, 1))
    _, line = run_cli(capsys, "sample", run, "-n", 10_000_000, "--npy", tmp_path / "s.npy",
                      "-o", tmp_path / "g.png")
    assert "7.3 GiB" in line and "free" in line
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("args,message", [
    (["--n", "0"], "--n must be >= 1"), (["--n", "-5"], "--n must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--set", "k=abc"], "k must be an integer, got 'abc'"),
    (["--set", "k=0"], "k (importance samples) must be >= 1"),
    (["--set", "k=nan"], "k must be finite"), (["--set", "k=1e400"], "k must be finite"),
    (["--set", "k=1000000000"], "memory limit"), (["--set", "kk=3"], "unknown nll option"),
    (["--set", "batch_size=0"], "batch_size must be >= 1"),
])
def test_nll_refuses_bad_counts(run, capsys, args, message):
    _, line = run_cli(capsys, "nll", run, *args)
    assert message in line


def test_nll_of_n_images(run, capsys):
    assert cli.main(["nll", str(run), "--n", "5", "--set", "k=2"]) == 0
    assert "(5 images)" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["-n", "0"], "-n must be >= 1"), (["-n", "-1"], "-n must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["-n", "100000000000"], "memory limit"),
])
def test_eval_refuses_bad_counts(run, capsys, args, message):
    _, line = run_cli(capsys, "eval", run, *args)
    assert message in line


# -- memory ------------------------------------------------------------------------------------


def test_resizing_past_memory_is_refused():
    with pytest.raises(DataError, match=r"60,000 images of 1x3000x3000 .*memory limit"):
        data.load("mnist?size=3000")


def test_train_on_a_resize_past_memory_is_one_line(capsys, tmp_path):
    _, line = run_cli(capsys, "train", "ddpm", "--dataset", "mnist?size=3000", "--steps", 1,
                      "--out", tmp_path / "r")
    assert "memory limit" in line


def _npy_claiming(path, n: int, data_bytes: int) -> None:
    from numpy.lib import format as npy_format

    with path.open("wb") as f:
        npy_format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (n, 28, 28)})
        f.truncate(f.tell() + data_bytes)  # sparse: takes no disk


def test_npy_header_claiming_more_than_the_file_is_refused(tmp_path):
    path = tmp_path / "big.npy"
    _npy_claiming(path, 99_999_999, 784 * 10)
    with pytest.raises(DataError, match=r"claims an array \(99999999, 28, 28\).*truncated"):
        data.load(path)


def test_npy_past_memory_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.npy"
    _npy_claiming(path, 99_999_999, 99_999_999 * 784)
    with pytest.raises(DataError, match="memory limit"):
        data.load(path)


def test_npz_member_claiming_more_than_it_holds_is_refused(tmp_path):
    import zipfile

    buf = io.BytesIO()
    from numpy.lib import format as npy_format

    npy_format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                            "shape": (99_999_999, 28, 28)})
    buf.write(b"\0" * 784)
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as z:
        z.writestr("images.npy", buf.getvalue())
    with pytest.raises(DataError, match=r"big.npz \(images\): its header claims"):
        data.load(tmp_path / "big.npz")


def test_grid_bounds():
    x = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="nrow"):
        make_grid(x, nrow=0)
    with pytest.raises(ConfigError, match="scale must be"):
        save_grid(x, "/nonexistent/g.png", scale=100000)
    with pytest.raises(ConfigError, match="grid images must be"):
        make_grid(torch.zeros(MAX_GRID_IMAGES + 1, 1, 2, 2, dtype=torch.uint8))


def test_a_guidance_that_overflows_is_one_line_never_a_black_grid(tmp_path, capsys):
    from helpers import TINY_DDPM, nonzero_ddpm

    nonzero_ddpm({**TINY_DDPM, "conditional": True, "num_classes": 3}).save(tmp_path / "m.pt")
    _, line = run_cli(capsys, "sample", tmp_path / "m.pt", "--labels", "1", "-n", "4",
                      "--set", "sampler=dpmpp-2m", "--set", "steps=5", "--set", "guidance=1e30",
                      "-o", tmp_path / "g.png")
    assert "guidance 1e+30 overflowed to non-finite values" in line
    assert not (tmp_path / "g.png").exists()
