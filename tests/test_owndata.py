"""Your own data: image folders and .npy/.npz arrays as datasets, every family at any size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo import data
from zoo.core import ConfigError, DataError
from zoo.train import Trainer, load_run

N_TRAIN, N_TEST = 120, 60
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist():
    """The first images of both MNIST splits, as the built-in loader gives them."""
    x_tr, y_tr = data.load("mnist", "train")
    x_te, y_te = data.load("mnist", "test")
    return {"train": (x_tr[:N_TRAIN], y_tr[:N_TRAIN]), "test": (x_te[:N_TEST], y_te[:N_TEST])}


def _save(x: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = x.permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path)


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory, mnist):
    """train/<digit>/<index>.png and test/<digit>/<index>.png from real MNIST images."""
    root = tmp_path_factory.mktemp("own") / "digits"
    for split, (x, y) in mnist.items():
        for i in range(len(x)):
            _save(x[i], root / split / str(int(y[i])) / f"{i:05d}.png")
    return root


def _by_class(x: torch.Tensor, y: torch.Tensor):
    """The order a class-folder dataset lists images in: by label, then by file (index)."""
    order = sorted(range(len(y)), key=lambda i: (int(y[i]), i))
    return x[order], y[order]


# -- folders ---------------------------------------------------------------------------------


def test_png_folder_loads_like_builtin_mnist(mnist_folder, mnist):
    for split in ("train", "test"):
        x, y = data.load(mnist_folder, split)
        ex, ey = _by_class(*mnist[split])
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.is_contiguous()
        assert torch.equal(x, ex) and torch.equal(y, ey)
    info = data.describe(str(mnist_folder))
    assert info["classes"] == [str(d) for d in range(10)] and info["image_shape"] == [1, 28, 28]
    assert info["splits"] == {"train": N_TRAIN, "test": N_TEST}
    # decoded once: a second load returns the cached tensors
    assert data.load(mnist_folder, "train")[0] is data.load(str(mnist_folder), "train")[0]


def test_held_out_split_is_seeded_and_sized(tmp_path, mnist):
    x, y = mnist["train"]
    root = tmp_path / "flat"
    for i in range(len(x)):
        _save(x[i], root / str(int(y[i])) / f"{i:05d}.png")
    tr, te = data.load(root, "train"), data.load(root, "test")
    assert len(te[0]) == round(0.1 * N_TRAIN) and len(tr[0]) + len(te[0]) == N_TRAIN
    both = torch.cat([tr[0], te[0]]), torch.cat([tr[1], te[1]])
    ex, ey = _by_class(x, y)
    assert sorted(both[1].tolist()) == sorted(ey.tolist())
    def rows(t):
        return sorted(map(bytes, t.flatten(1).numpy()))

    assert rows(both[0]) == rows(ex)
    assert torch.equal(data.load(root, "test")[0], te[0])  # same seed, same split
    other = data.load(root, "test", split_seed=1)[0]
    assert other.shape == te[0].shape and not torch.equal(other, te[0])
    assert len(data.load(f"{root}?test_size=30", "test")[0]) == 30
    assert len(data.load({"path": str(root), "test_size": 0.25}, "train")[0]) == N_TRAIN - 30


def test_unlabelled_folder_gets_minus_one(tmp_path, mnist):
    x, _ = mnist["test"]
    for i in range(20):
        _save(x[i], tmp_path / "u" / f"{i:03d}.png")
    xs, ys = data.load(tmp_path / "u", "train")
    assert (ys == data.UNLABELLED).all() and data.UNLABELLED == -1
    assert torch.equal(torch.cat([xs, data.load(tmp_path / "u", "test")[0]]).sum(0).double(),
                       x[:20].sum(0).double())


def test_mixed_sizes_are_resized_or_cropped(tmp_path, mnist):
    x, _ = mnist["test"]
    root = tmp_path / "mixed"
    for i in range(4):
        _save(x[i], root / f"a{i}.png")
    small = Image.fromarray(x[4, 0].numpy()).resize((20, 20))
    small.save(root / "b.png")
    with pytest.raises(DataError, match=r"2 sizes.*4 of 28x28.*1 of 20x20.*b\.png.*size="):
        data.load(root)
    got, _ = data.load(root, "train", size=28, test_size=0)
    assert got.shape == (5, 1, 28, 28)
    assert torch.equal(got[:4], x[:4])  # images already of the size are untouched
    want = np.asarray(small.resize((28, 28), Image.Resampling.BICUBIC))
    assert torch.equal(got[4, 0], torch.from_numpy(want.copy()))
    assert data.load(root, size=16, test_size=0)[0].shape == (5, 1, 16, 16)
    # fit=crop keeps the aspect ratio and cuts out the centre
    wide = np.zeros((28, 56), np.uint8)
    wide[:, 28:] = 255
    Image.fromarray(wide).save(root / "c.png")
    crop, _ = data.load(f"{root}?size=28&fit=crop&test_size=0")
    c = crop[-1, 0]
    assert (c[:, :14] == 0).all() and (c[:, 14:] == 255).all()
    squeezed = data.load(f"{root}?size=28&test_size=0")[0][-1, 0]  # resize: both halves
    assert (squeezed[:, :13] == 0).all() and (squeezed[:, 15:] == 255).all()


def test_channels_are_never_mixed_silently(tmp_path, mnist, capsys):
    x, _ = mnist["test"]
    root = tmp_path / "rgbgray"
    rgb = torch.stack([x[:3, 0], 255 - x[:3, 0], x[:3, 0] // 2], 1)
    for i in range(3):
        _save(rgb[i], root / f"c{i}.png")
    _save(x[3], root / "g.png")
    got, _ = data.load(root, test_size=0)
    assert got.shape == (4, 3, 28, 28)
    assert "mixes 3 RGB and 1 grayscale images; using 3 channels" in capsys.readouterr().err
    assert torch.equal(got[3], x[3].expand(3, 28, 28))
    gray, _ = data.load(root, test_size=0, channels=1)
    assert gray.shape == (4, 1, 28, 28)
    pil_l = np.asarray(Image.open(root / "c0.png").convert("L"))
    assert torch.equal(gray[0, 0], torch.from_numpy(pil_l.copy()))


# -- arrays ----------------------------------------------------------------------------------


def test_arrays_in_each_layout_load_the_same(tmp_path, mnist):
    x, y = mnist["train"]
    rgb = torch.cat([x, 255 - x, x // 2], 1)  # [N, 3, 28, 28]
    nchw, nhwc = rgb.numpy(), rgb.permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "nchw.npz", images=nchw, labels=y.numpy())
    np.savez(tmp_path / "nhwc.npz", images=np.ascontiguousarray(nhwc), labels=y.numpy())
    np.save(tmp_path / "nhw.npy", x[:, 0].numpy())
    np.savez(tmp_path / "splits.npz", x_train=nhwc[:100], y_train=y[:100].numpy(),
             x_test=nhwc[100:], y_test=y[100:].numpy())
    opts = {"test_size": 0}
    a, ya = data.load(tmp_path / "nchw.npz", **opts)
    b, yb = data.load(tmp_path / "nhwc.npz", **opts)
    assert torch.equal(a, rgb) and torch.equal(b, rgb) and torch.equal(ya, y)
    g, yg = data.load(tmp_path / "nhw.npy", **opts)
    assert torch.equal(g, x) and (yg == -1).all()
    assert torch.equal(data.load(tmp_path / "splits.npz", "test")[0], rgb[100:])
    # the same images in either layout: the same content hash
    assert data.content_hash(f"{tmp_path / 'nchw.npz'}?test_size=0") == \
        data.content_hash(f"{tmp_path / 'nhwc.npz'}?test_size=0")
    # [N, 3, 5, 3] could be either layout: it must be said
    amb = np.zeros((4, 3, 5, 3), np.uint8)
    np.save(tmp_path / "amb.npy", amb)
    with pytest.raises(DataError, match=r"amb\.npy.*layout=nhwc or layout=nchw"):
        data.load(tmp_path / "amb.npy")
    assert data.load(tmp_path / "amb.npy", layout="nhwc", test_size=0)[0].shape == (4, 3, 3, 5)
    assert data.load(tmp_path / "amb.npy", layout="nchw", test_size=0)[0].shape == (4, 3, 5, 3)


# -- bad data --------------------------------------------------------------------------------


def test_bad_data_errors_name_the_file(tmp_path, mnist):
    x, _ = mnist["test"]
    bad = tmp_path / "bad"
    for i in range(3):
        _save(x[i], bad / f"{i}.png")
    (bad / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png cannot be read as an image"):
        data.load(bad)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty holds no images"):
        data.load(tmp_path / "empty")
    np.save(tmp_path / "floats.npy", np.zeros((4, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"floats\.npy.*must be uint8.*float32.*astype"):
        data.load(tmp_path / "floats.npy")
    with pytest.raises(ConfigError, match=r"unknown dataset .*nowhere: no such folder or file; "
                       r"valid datasets: mnist, fashion-mnist, cifar10, or the path of a folder"):
        data.load(tmp_path / "nowhere")
    mixed = tmp_path / "loose"
    _save(x[0], mixed / "cats" / "0.png")
    _save(x[1], mixed / "1.png")
    with pytest.raises(DataError, match=r"loose holds both images \(1\.png"):
        data.load(mixed)
    (tmp_path / "classes" / "empty_class").mkdir(parents=True)
    _save(x[0], tmp_path / "classes" / "full" / "0.png")
    with pytest.raises(DataError, match=r"class folder .*empty_class holds no images"):
        data.load(tmp_path / "classes")
    few = tmp_path / "few"
    for i in range(12):
        _save(x[i], few / f"{i}.png")
    model = zoo.create("vae-mlp", dataset=few, hidden=8)
    with pytest.raises(DataError, match=r"few has 11 training images, fewer than one batch of 16"):
        Trainer(model, few, tmp_path / "run", steps=1, batch_size=16, progress=False)
    with pytest.raises(ConfigError, match="unknown dataset option 'colour'"):
        data.load(f"{few}?colour=3")
    with pytest.raises(ConfigError, match="test_size.*do not apply to the built-in"):
        data.load("mnist", test_size=0.2)


def test_a_npz_member_that_is_no_array_is_ignored_never_inflated(tmp_path, monkeypatch):
    import zipfile

    from zoo.limits import MEMORY_ENV

    path = tmp_path / "bomb.npz"
    np.savez(path, images=np.zeros((4, 8, 8), np.uint8))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:  # 64 MiB of zeros in ~64 KiB
        z.writestr("notes", b"\0" * 2**26)
    monkeypatch.setenv(MEMORY_ENV, "0.01")
    opened, real_open = [], zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(getattr(name, "filename", name))
                        or real_open(self, name, *a, **k))
    assert data.load(path, test_size=0)[0].shape == (4, 1, 8, 8)
    assert "notes" not in opened and "images.npy" in opened
    only = tmp_path / "none.npz"
    with zipfile.ZipFile(only, "w") as z:
        z.writestr("notes.txt", "no arrays")
    with pytest.raises(DataError, match=r"none\.npz holds no \.npy arrays"):
        data.load(only)


def test_image_sizes_are_checked_from_headers_before_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile

    from zoo.limits import MEMORY_ENV

    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):  # 9 MB each decoded, a few KB each on disk
        Image.new("L", (3000, 3000)).save(big / f"{i}.png")
    monkeypatch.setenv(MEMORY_ENV, "0.02")

    def no_decoding(self):
        raise AssertionError(f"{self.filename} decoded before its size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for spec in (str(big), f"{big}?size=28"):  # fitted small, decoded at full size first
        with pytest.raises(DataError, match=r"decoding the 3 images in .*big would take "
                                            r"25\.7 MiB, more than zoo's memory limit"):
            data.load(spec, test_size=0)


def test_spec_strings_and_tables():
    s = data.spec("./pics", image_size=32, channels="3")
    assert str(s) == f"{Path('pics').absolute()}?size=32&channels=3" and s.name == "pics"
    assert data.spec(str(s)) == s == data.spec({"path": "./pics", "size": 32, "channels": 3})
    assert str(data.spec("Fashion_MNIST")) == "fashion-mnist"
    assert str(data.spec("x.npz?size=16x8&fit=crop")).endswith("x.npz?size=16x8&fit=crop")
    assert data.spec("x.npz").name == "x"
    with pytest.raises(ConfigError, match="size must be"):
        data.spec("pics", size="big")
    # a built-in dataset fitted to another size and channel count
    x, y = data.load("mnist?size=16&channels=3", "test")
    assert x.shape == (10000, 3, 16, 16) and len(y) == 10000
    assert data.image_shape("mnist?size=16&channels=3") == (3, 16, 16)


# -- every family at any size ----------------------------------------------------------------

TINY = {
    "vae-mlp": {"hidden": 32, "latent_dim": 4},
    "vae-conv": {"latent_dim": 4, "conv_hidden": 32},
    "gan-mlp": {"latent_dim": 8, "g_hidden": (32,), "d_hidden": (32,)},
    "gan-dcgan": {"latent_dim": 8, "channels": 8},
    "ar-transformer": {"dim": 16, "depth": 1, "heads": 2},
    "ddpm": {"channels": 8, "timesteps": 10},
}
SHAPES = [(1, 8, 8), (3, 16, 16), (3, 32, 32)]


@pytest.fixture(scope="module")
def rgb_array(tmp_path_factory, mnist):
    x, y = mnist["train"]
    path = tmp_path_factory.mktemp("arr") / "digits.npz"
    np.savez(path, images=torch.cat([x, 255 - x, x // 2], 1).numpy(), labels=y.numpy())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY))
def test_every_family_trains_and_samples_at_every_size(name, rgb_array, tmp_path):
    for c, h, w in SHAPES:
        dataset = {"path": str(rgb_array), "size": h, "channels": c}
        torch.manual_seed(0)
        model = zoo.create(name, dataset=dataset, **TINY[name])
        assert model.image_shape == (c, h, w)
        out = tmp_path / f"{h}"
        Trainer(model, dataset, out, steps=2, batch_size=4, progress=False).fit()
        kw = {"sampler": "ddim", "steps": 2} if name == "ddpm" else {}
        s = load_run(out).sample(2, generator=torch.Generator().manual_seed(0), **kw)
        assert s.shape == (2, c, h, w) and s.dtype == torch.uint8
        info = json.loads((out / "run.json").read_text())
        assert info["dataset"].endswith(f"digits.npz?size={h}&channels={c}")
        assert info["dataset_sha256"] == data.content_hash(dataset, "train")
    assert zoo.create(name, image_shape=(3, 16, 16), **TINY[name]).image_shape == (3, 16, 16)


def test_unsupported_sizes_say_which_work(tmp_path):
    with pytest.raises(ConfigError, match=r"sides 8, 10, 12, 14, 16, 20, 24, 28, 32.*got 30x30"):
        zoo.create("gan-dcgan", image_shape=(3, 30, 30))
    with pytest.raises(ConfigError, match=r"even height and width \(e\.g\. 8, 10.*got 27x27"):
        zoo.create("vae-conv", image_shape=(1, 27, 27))
    with pytest.raises(ConfigError, match=r"multiples of 4 \(e\.g\. 28, 32, 64\)"):
        zoo.create("ddpm", image_shape=(1, 30, 30), channel_mult=(1, 2, 2))
    # the U-Net's depth follows the size when it is not given
    assert zoo.create("ddpm", image_shape=(1, 30, 30)).config.channel_mult == (1, 2)


# -- the command line ------------------------------------------------------------------------


def test_cli_trains_on_a_folder(mnist_folder, tmp_path, capsys):
    from zoo.cli import main

    out = tmp_path / "run"
    args = ["train", "ddpm", "--dataset", str(mnist_folder), "--set", "image_size=16",
            "--set", "channels=8", "--set", "timesteps=10", "--batch-size", "8", "--out",
            str(out)]
    assert main([*args, "--steps", "2"]) == 0, capsys.readouterr().err
    info = json.loads((out / "run.json").read_text())
    assert info["dataset"] == f"{mnist_folder}?size=16" and info["image_shape"] == [1, 16, 16]
    resume = ["train", "ddpm", "--dataset", str(mnist_folder), "--set", "image_size=16",
              "--out", str(out), "--resume", "--steps", "3", "--batch-size", "8"]
    assert main(resume) == 0, capsys.readouterr().err
    assert main(["sample", str(out), "-n", "2", "-o", str(tmp_path / "s.png"),
                 "--set", "sampler=ddim", "--set", "steps=2"]) == 0
    capsys.readouterr()
    assert main(["train", "ddpm", "--dataset", str(mnist_folder), "--steps", "1", "--out",
                 str(tmp_path / "big")]) == 2
    err = capsys.readouterr().err
    assert "fewer than one batch of 128" in err and str(mnist_folder) in err


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_on_own_data(mnist_folder, tmp_path, monkeypatch):
    from zoo import metrics

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.delenv("ZOO_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    x, _ = data.load(mnist_folder, "test")
    with pytest.raises(metrics.MetricsError,
                       match=r"`zoo extractor .*digits`"):
        metrics.evaluate(x, str(mnist_folder), metrics="fid", cache_dir=tmp_path / "c")
    from zoo.metrics import extractor_training as script

    opts = script.TrainOptions(epochs=1, batch_size=32, threads=1, channels=(8, 16),
                               feature_dim=16)
    card = script.train(str(mnist_folder), opts, tmp_path / "clf")
    assert card["name"] == "digits-classifier" and card["config"]["num_classes"] == 10
    assert card["dataset_sha256"] == data.content_hash(mnist_folder, "train")
    ext = tmp_path / "clf" / "digits-classifier.pt"
    kw = {"extractor": str(ext), "metrics": "fid", "cache_dir": tmp_path / "c",
          "announce": False}
    first = metrics.evaluate(x, mnist_folder, **kw)
    assert first["reference_cache"] == "miss" and first["fid"] == pytest.approx(0.0, abs=1e-3)
    assert first["dataset_sha256"] == data.content_hash(mnist_folder, "test")
    # the cache follows the content: a copy elsewhere hits it, a changed image does not
    copy = tmp_path / "elsewhere" / "digits"
    shutil.copytree(mnist_folder, copy)
    assert metrics.evaluate(x, copy, **kw)["reference_cache"] == "hit"
    victim = next((copy / "test").rglob("*.png"))
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(victim)
    assert metrics.evaluate(x, copy, **kw)["reference_cache"] == "miss"
    # an unlabelled dataset cannot train a classifier, and says why
    unl = tmp_path / "unlabelled"
    for i in range(40):
        _save(x[i], unl / f"{i}.png")
    with pytest.raises(DataError, match="no labels"):
        script.train(str(unl), opts, tmp_path / "clf2")


# -- a conditional model on a folder of class subfolders -------------------------------------


def test_a_folder_of_one_class_is_told_it_has_one(tmp_path):
    """It was told it "has no class labels"."""
    for i in range(4):
        _save(torch.full((1, 8, 8), 40 * i, dtype=torch.uint8), tmp_path / "pets" / "cat"
              / f"{i}.png")
    with pytest.raises(ConfigError, match=r"pets has one class \('cat'\), and a conditional "
                       "model needs at least two"):
        zoo.create("ddpm", dataset=str(tmp_path / "pets"), conditional=True)


LONG = "a_very_long_folder_name_of_golden_retrievers_in_the_park"
PETS = sorted(["cat", "dog", LONG])  # the classes: 0 = LONG, 1 = cat, 2 = dog


@pytest.fixture(scope="module")
def pets_run(tmp_path_factory):
    """A conditional ddpm trained for 2 steps, through the CLI, on a folder of three class
    subfolders of 8x8 PNGs (each class a bright band of columns of its own)."""
    from zoo.cli import main

    root = tmp_path_factory.mktemp("pets")
    rng = np.random.default_rng(0)
    for k, name in enumerate(PETS):
        for i in range(10):
            a = rng.integers(0, 40, (8, 8), dtype=np.uint8)
            a[:, 3 * k:3 * k + 2] = 255
            _save(torch.from_numpy(a)[None], root / "pets" / name / f"{i}.png")
    out = root / "run"
    assert main(["train", "ddpm", "--dataset", str(root / "pets"), "--set", "conditional=true",
                 "--set", "channels=8", "--set", "timesteps=10", "--batch-size", "8",
                 "--steps", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def sample(pets_run, tmp_path, monkeypatch):
    """``zoo sample`` of the pets run (DDIM, 2 steps) in tmp_path, returning its exit code and
    the row names that reached ``save_labelled_grid``."""
    from zoo import cli, sampling

    monkeypatch.chdir(tmp_path)
    seen = {}
    real = sampling.save_labelled_grid

    def keep(images, names, *a, **k):
        seen["names"] = list(names)
        return real(images, names, *a, **k)

    monkeypatch.setattr(sampling, "save_labelled_grid", keep)

    def run(*args, run=pets_run):
        seen.clear()
        code = cli.main(["sample", str(run), "--set", "sampler=ddim", "--set", "steps=2",
                         "--scale", "2", *args])
        return code, seen.get("names")

    return run


def test_a_class_folder_trains_a_conditional_model_that_knows_its_classes(pets_run):
    info = json.loads((pets_run / "run.json").read_text())
    assert info["classes"] == PETS and info["model_config"]["num_classes"] == 3
    assert load_run(pets_run).num_classes == 3


def test_grid_rows_are_labelled_with_the_folder_names(sample, capsys):
    assert sample("--labels", "0-2", "--per-class", "2", "-o", "grid.png") == (0, PETS)
    img = Image.open("grid.png")
    assert img.height == 3 * (8 + 2) * 2 + 2 * 2  # three rows of 8x8 at scale 2
    # the long name is cut to fit: the label column is at most LABEL_MAX_EMS font sizes wide
    from zoo.images import LABEL_MAX_EMS
    assert img.width - (2 * 10 + 2) * 2 <= LABEL_MAX_EMS * 14 + 8
    assert "3 classes, 2 per row" in capsys.readouterr().out


def test_labels_take_the_class_names(sample, capsys):
    assert sample("--labels", "dog,CAT", "-n", "4", "-o", "g.png") == (0, ["dog", "cat"])
    assert sample("--labels", "A very-long folder name of golden retrievers in the park,2",
                  "-n", "2", "-o", "g.png") == (0, [LONG, "dog"])
    assert sample("--labels", "cat", "-n", "2", "-o", "one.png") == (0, None)  # no rows
    assert "class 1 (cat)" in capsys.readouterr().out


@pytest.mark.parametrize("spec, needles", [
    ("cat,cow", ["no class named 'cow'", f"0={LONG}, 1=cat, 2=dog"]),
    ("3-x", ["--labels takes class numbers"]),
    ("3", ["labels must lie in 0..2"]),
])
def test_unknown_class_names_are_one_line(sample, capsys, spec, needles):
    assert sample("--labels", spec, "-o", "g.png")[0] == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error:") and "\n" not in err
    assert all(n in err for n in needles), err
    assert not Path("g.png").exists()


def test_npy_saves_the_labels_beside_the_samples(sample, capsys):
    assert sample("--labels", "dog,cat,0", "--per-class", "2", "-o", "g.png",
                  "--npy", "out")[0] == 0
    assert np.load("out.npy").shape == (6, 1, 8, 8)
    labels = np.load("out.labels.npy")
    assert labels.dtype == np.int64 and labels.tolist() == [2, 2, 1, 1, 0, 0]
    assert "out.npy (labels in out.labels.npy)" in capsys.readouterr().out
    assert sample("-n", "2", "-o", "g.png", "--npy", "plain.npy")[0] == 0
    assert not Path("plain.labels.npy").exists()  # no --labels, no labels file


def test_names_come_from_the_run_when_the_folder_is_gone(sample, pets_run, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(pets_run, moved)
    info = json.loads((moved / "run.json").read_text())
    info["dataset"] = str(tmp_path / "nowhere")
    (moved / "run.json").write_text(json.dumps(info))
    assert sample("--labels", "dog,0", "-n", "2", "-o", "g.png", run=moved) == (0, ["dog", LONG])
    # an older run without names: its dataset's names, else the numbers
    del info["classes"]
    (moved / "run.json").write_text(json.dumps(info))
    assert sample("--labels", "2,0", "-n", "2", "-o", "g.png", run=moved) == (0, ["2", "0"])
    capsys.readouterr()
    assert sample("--labels", "dog", "-o", "g.png", run=moved)[0] == 2
    assert "records no class names" in capsys.readouterr().err
    info["classes"] = [1, 2, 3]
    (moved / "run.json").write_text(json.dumps(info))
    assert sample("--labels", "0-2", "-o", "g.png", run=moved)[0] == 2
    assert "classes must be a list of strings" in capsys.readouterr().err


def test_built_in_datasets_name_their_classes(tmp_path):
    from zoo.cli import parse_labels

    model = zoo.create("vae-mlp", dataset="fashion-mnist", hidden=16, latent_dim=2)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    Trainer(model, "fashion-mnist", tmp_path, images=images, steps=1, batch_size=8,
            progress=False).fit()
    names = json.loads((tmp_path / "run.json").read_text())["classes"]
    assert names[5] == "Sandal" and names[0] == "T-shirt/top" and len(names) == 10
    assert parse_labels("sandal,Sneaker", names) == [5, 7]
    assert parse_labels("ankle_boot,t shirt/top,0-1", names) == [9, 0, 1]
    with pytest.raises(ConfigError, match="takes class numbers"):  # not the name "0"
        parse_labels("0-", [str(i) for i in range(10)])
    with pytest.raises(ConfigError, match=r"several classes \(0=cat, 1=Cat\)"):
        parse_labels("CAT", ["cat", "Cat"])
    assert parse_labels("Cat", ["cat", "Cat"]) == [1]  # an exact match first


def test_long_row_labels_are_cut_to_fit():
    from zoo.images import _font, fit_label

    font = _font(14)
    assert fit_label("Ankle boot", font, 140) == "Ankle boot"
    assert fit_label("two\nlines", font, 140) == "two lines"
    cut = fit_label(LONG, font, 140)
    assert cut.endswith("\u2026") and LONG.startswith(cut[:-1]) and font.getlength(cut) <= 140


def test_an_npz_of_many_unnamed_arrays_lists_a_few(tmp_path):
    """The error for a .npz without an 'images' array names a few of its arrays and how
    many more, not every one of thousands."""
    np.savez(tmp_path / "many.npz", **{f"a{i}": np.zeros((1, 8, 8), np.uint8)
                                       for i in range(500)})
    with pytest.raises(DataError, match=r"holds arrays a0, .*, a7 and 492 more; name") as e:
        data.load(tmp_path / "many.npz")
    assert "a8," not in str(e.value)


def test_a_large_image_is_refused_by_zoos_limit_without_pils_warning(tmp_path, monkeypatch,
                                                                     recwarn):
    """Past PIL's decompression-bomb pixel count (lowered here) the header is read without
    PIL's warning on stderr: zoo's memory limit alone decides."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for c in "ab":
        (tmp_path / "big" / c).mkdir(parents=True)
        Image.new("L", (12, 12)).save(tmp_path / "big" / c / "0.png")
    monkeypatch.setenv("ZOO_MAX_MEMORY_GB", "1e-7")
    with pytest.raises(DataError, match=r"decoding the 2 images .* more than zoo's memory"):
        data.load(tmp_path / "big")
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
