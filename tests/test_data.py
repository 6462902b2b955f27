"""zoo.data: real files load with the known counts; bad files, downloads and batches."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import data
from zoo.core import ConfigError, DataError

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
COUNTS = {
    ("mnist", "train"): MNIST_TRAIN,
    ("mnist", "test"): MNIST_TEST,
    ("fashion-mnist", "train"): [6000] * 10,
    ("fashion-mnist", "test"): [1000] * 10,
}
T10K = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST files ($ZOO_DATA_ROOT in CI), resolved before any test edits the env."""
    return data.find("mnist") or data.download("mnist")


def _copy(src_dir: Path, root: Path, name: str, files) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(src_dir / f, root / name / f)
    return root / name


# -- real data ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,split", list(COUNTS))
def test_load_real_data(name, split):
    x, y = data.load(name, split)
    n = sum(COUNTS[name, split])
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.uint8 and x.is_contiguous()
    assert y.shape == (n,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == COUNTS[name, split]
    assert int(x.min()) == 0 and int(x.max()) == 255
    assert data.dataset_info(name).splits[split] == n
    again = data.load(name, split)
    assert again[0] is x and again[1] is y


def test_mnist_digit_looks_like_a_digit():
    x, y = data.load("mnist", "train")
    assert y[0] == 5  # the first MNIST training image is the well-known 5
    first = x[0, 0]
    assert first[:4].sum() == 0 and first[:, :2].sum() == 0
    assert (first > 0).float().mean() > 0.1


def test_dataset_info_and_errors():
    assert data.dataset_info("cifar10").image_shape == (3, 32, 32)
    assert data.dataset_info("Fashion_MNIST").name == "fashion-mnist"
    with pytest.raises(ConfigError, match="mnist, fashion-mnist, cifar10"):
        data.dataset_info("imagenet")
    with pytest.raises(ConfigError, match="valid splits: train, test"):
        data.load("mnist", "validation")


def test_data_roots_order(tmp_path, monkeypatch, no_roots):
    assert data.data_roots() == [no_roots / ".cache" / "zoo" / "data"]
    monkeypatch.setenv("ZOO_DATA_ROOT", str(tmp_path / "env"))
    assert data.data_roots(tmp_path / "arg") == [
        tmp_path / "arg", tmp_path / "env", no_roots / ".cache" / "zoo" / "data"
    ]


def test_find(tmp_path, mnist_dir, no_roots):
    assert data.find("mnist", tmp_path) is None
    _copy(mnist_dir, tmp_path, "mnist", data.DATASETS["mnist"].files)
    assert data.find("mnist", tmp_path) == tmp_path / "mnist"
    assert data.find("cifar10", tmp_path) is None


# -- bad files ---------------------------------------------------------------------------


def test_flipped_byte_is_named(tmp_path, mnist_dir, monkeypatch):
    d = _copy(mnist_dir, tmp_path, "mnist", T10K)
    buf = bytearray((d / T10K[1]).read_bytes())
    buf[len(buf) // 2] ^= 0x01
    (d / T10K[1]).write_bytes(buf)
    bad_md5 = hashlib.md5(buf).hexdigest()
    with pytest.raises(DataError) as e:
        data.load("mnist", "test", root=tmp_path)
    msg = str(e.value)
    assert str(d / T10K[1]) in msg and "ec29112dd5afa0611ce80d1b7f02629c" in msg
    assert bad_md5 in msg and "delete" in msg
    rows = {r["file"]: r for r in data.check(tmp_path) if r["path"].startswith(str(tmp_path))}
    assert rows[T10K[0]]["ok"] and not rows[T10K[1]]["ok"]
    assert bad_md5 in rows[T10K[1]]["detail"]


def test_truncated_file_is_named(tmp_path, mnist_dir):
    d = _copy(mnist_dir, tmp_path, "mnist", T10K)
    blob = (d / T10K[0]).read_bytes()
    (d / T10K[0]).write_bytes(blob[: len(blob) // 3])
    with pytest.raises(DataError, match="truncated") as e:
        data.load("mnist", "test", root=tmp_path)
    assert T10K[0] in str(e.value) and "9fb629c4189551a2d022fa330f9573f3" in str(e.value)


def test_missing_file_names_places_searched(tmp_path, monkeypatch, no_roots):
    env_root = tmp_path / "env"
    monkeypatch.setenv("ZOO_DATA_ROOT", str(env_root))
    for kwargs, why in [({"download": False}, "download=False"), ({}, "ZOO_OFFLINE")]:
        monkeypatch.setenv("ZOO_OFFLINE", "1")
        with pytest.raises(DataError) as e:
            data.load("mnist", "test", root=tmp_path / "arg", **kwargs)
        msg = str(e.value)
        for root in (tmp_path / "arg", env_root, no_roots / ".cache" / "zoo" / "data"):
            assert str(root / "mnist" / T10K[0]) in msg
        assert "9fb629c4189551a2d022fa330f9573f3" in msg and why in msg
        assert "ZOO_DATA_ROOT" in msg


# -- downloads ---------------------------------------------------------------------------


class _Garbage(http.server.BaseHTTPRequestHandler):
    size = 3000

    def do_GET(self) -> None:
        body = os.urandom(self.size)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Missing(_Garbage):
    def do_GET(self) -> None:
        self.send_error(404)


def test_download_from_local_mirror(tmp_path, mnist_dir, http_server, no_roots):
    url = http_server(mnist_dir)
    d = data.download("mnist", root=tmp_path, mirrors=[url], progress=False)
    assert d == tmp_path / "mnist"
    assert sorted(p.name for p in d.iterdir()) == sorted(data.DATASETS["mnist"].files)
    assert all(r["ok"] for r in data.check(tmp_path))
    x, y = data.load("mnist", "test", root=tmp_path, download=False)
    x0, y0 = data.load("mnist", "test", root=mnist_dir.parent)
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_bad_mirrors_are_reported(tmp_path, mnist_dir, http_server, no_roots):
    garbage, missing = http_server(_Garbage), http_server(_Missing)
    with pytest.raises(DataError) as e:
        data.download("mnist", root=tmp_path, mirrors=[missing, garbage], progress=False)
    msg = str(e.value)
    assert f"{missing}t10k" in msg or f"{missing}train" in msg
    assert "HTTP 404" in msg and "expected" in msg and garbage in msg
    assert not (tmp_path / "mnist").exists()
    d = data.download("mnist", root=tmp_path, mirrors=[missing, http_server(mnist_dir)],
                      progress=False)
    assert all(r["ok"] for r in data.check(tmp_path)) and len(list(d.iterdir())) == 4


def test_garbage_of_the_right_size_fails_the_md5(tmp_path, http_server, no_roots):
    spec = data.DATASETS["mnist"].files["train-images-idx3-ubyte.gz"]
    server = http_server(type("RightSize", (_Garbage,), {"size": spec.size}))
    with pytest.raises(DataError, match=f"expected md5 {spec.md5}"):
        data.download("mnist", root=tmp_path, mirrors=[server], progress=False)
    assert not (tmp_path / "mnist").exists()


def test_load_downloads_missing_split_from_env_mirror(tmp_path, mnist_dir, http_server,
                                                      monkeypatch, no_roots):
    monkeypatch.setenv("ZOO_DATA_MIRROR", http_server(mnist_dir.parent))
    x, y = data.load("mnist", "test", root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(T10K)
    assert torch.bincount(y).tolist() == MNIST_TEST and x.shape == (10000, 1, 28, 28)


# -- CIFAR-10 ----------------------------------------------------------------------------


def _py2_style_pickle(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle wrote the originals: byte strings, numpy.core globals."""
    n, d = images.shape
    raw = images.tobytes()
    return (
        b"\x80\x02}(U\x04data"
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        b"(K\x01M" + n.to_bytes(2, "little") + b"M" + d.to_bytes(2, "little") + b"\x86"
        b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
        b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        b"T" + len(raw).to_bytes(4, "little") + raw + b"tb"
        b"U\x06labels](" + b"".join(b"K" + bytes([v]) for v in labels) + b"eu."
    )


def _cifar_tarball(path: Path, per_batch: int = 3, evil: bool = False):
    """A CIFAR-10-format tarball with a few images per batch; returns (images, labels)."""
    rng = np.random.default_rng(0)
    out = {"train": ([], []), "test": ([], [])}
    with tarfile.open(path, "w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        for i, name in enumerate(names):
            if name == "batches.meta":
                blob = pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2)
            else:
                x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
                y = [int(v) for v in rng.integers(0, 10, per_batch)]
                split = "test" if name == "test_batch" else "train"
                out[split][0].append(x)
                out[split][1].extend(y)
                if i == 0:
                    blob = _py2_style_pickle(x, y)
                else:
                    blob = pickle.dumps(
                        {b"batch_label": name.encode(), b"labels": y, b"data": x,
                         b"filenames": [b"x.png"] * per_batch},
                        protocol=2,
                    )
                if evil and name == "test_batch":
                    blob = b"cos\nsystem\n(S'echo pwned'\ntR."
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return {k: (np.concatenate(v[0]), np.array(v[1])) for k, v in out.items()}


def _expect_tarball(monkeypatch, path: Path) -> None:
    blob = path.read_bytes()
    info = data.DATASETS["cifar10"]
    spec = data.FileSpec(hashlib.md5(blob).hexdigest(), len(blob))
    monkeypatch.setitem(data.DATASETS, "cifar10", dataclasses.replace(
        info, files={"cifar-10-python.tar.gz": spec}
    ))


def test_cifar10_download_and_decode(tmp_path, http_server, monkeypatch, no_roots):
    served = tmp_path / "served" / "cifar10"
    served.mkdir(parents=True)
    tarball = served / "cifar-10-python.tar.gz"
    expected = _cifar_tarball(tarball)
    _expect_tarball(monkeypatch, tarball)
    monkeypatch.setenv("ZOO_DATA_MIRROR", http_server(served.parent))
    root = tmp_path / "root"
    for split, n in (("train", 15), ("test", 3)):
        x, y = data.load("cifar10", split, root=root)
        raw, labels = expected[split]
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8 and x.is_contiguous()
        assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
        # channel-major rows: 1024 red bytes, then green, then blue, each 32x32 row-major
        i = n - 1
        assert int(x[i, 0, 0, 0]) == raw[i, 0] and int(x[i, 0, 0, 1]) == raw[i, 1]
        assert int(x[i, 0, 1, 0]) == raw[i, 32]
        assert int(x[i, 1, 0, 0]) == raw[i, 1024] and int(x[i, 2, 31, 31]) == raw[i, 3071]
        assert torch.equal(x, torch.from_numpy(raw).view(n, 3, 32, 32))
    assert data.find("cifar10", root) == root / "cifar10"


def test_cifar10_refuses_code_in_pickles(tmp_path, monkeypatch, no_roots):
    d = tmp_path / "cifar10"
    d.mkdir()
    _cifar_tarball(d / "cifar-10-python.tar.gz", evil=True)
    _expect_tarball(monkeypatch, d / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="refusing to load global os.system"):
        data.load("cifar10", "test", root=tmp_path, download=False)


# -- BatchIterator -----------------------------------------------------------------------


def _coded(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose two pixels spell their index, and labels equal to the index."""
    ids = torch.arange(n)
    images = torch.stack([ids % 256, ids // 256], 1).to(torch.uint8).view(n, 1, 1, 2)
    return images, ids


def _ids(batch: torch.Tensor) -> torch.Tensor:
    return batch[:, 0, 0, 0].long() + 256 * batch[:, 0, 0, 1].long()


def _take(it, k: int) -> list:
    return [next(it) for _ in range(k)]


def test_batches_deterministic_per_seed():
    images, _ = _coded(1000)
    a = _take(iter(data.BatchIterator(images, 64, seed=3)), 40)
    b = _take(iter(data.BatchIterator(images, 64, seed=3)), 40)
    c = _take(iter(data.BatchIterator(images, 64, seed=4)), 40)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(a, c, strict=True))
    assert all(t.dtype == torch.uint8 and t.shape == (64, 1, 1, 2) for t in a)


@pytest.mark.parametrize("drop_last", [True, False])
def test_every_image_once_per_epoch(drop_last):
    images, _ = _coded(1050)
    it = data.BatchIterator(images, 100, seed=1, drop_last=drop_last)
    assert it.steps_per_epoch == (10 if drop_last else 11)
    epochs = []
    for _ in range(3):
        ids = torch.cat([_ids(b) for b in _take(it, it.steps_per_epoch)])
        assert len(ids) == len(set(ids.tolist())) == (1000 if drop_last else 1050)
        epochs.append(ids)
    assert it.step == 3 * it.steps_per_epoch and it.epoch == 3
    assert not torch.equal(epochs[0], epochs[1])


def test_resume_equals_uninterrupted_stream():
    images, _ = _coded(500)
    full = _take(data.BatchIterator(images, 32, seed=7), 50)
    for k in (0, 1, 15, 16, 37):
        it = data.BatchIterator(images, 32, seed=7, start_step=k)
        rest = _take(it, 50 - k)
        assert all(torch.equal(u, v) for u, v in zip(full[k:], rest, strict=True))
        assert it.step == 50


def test_labels_stay_aligned_with_real_mnist():
    x, y = data.load("mnist", "test")
    it = data.BatchIterator(x, 128, seed=0, labels=y)
    for _ in range(100):
        xb, yb = next(it)
        idx = it.indices(it.step - 1)
        assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx])
    images, ids = _coded(300)
    for xb, yb in _take(data.BatchIterator(images, 50, labels=ids), 12):
        assert torch.equal(_ids(xb), yb)


def test_ranks_split_each_global_batch():
    images, _ = _coded(1000)
    its = [data.BatchIterator(images, 50, seed=2, rank=r, world_size=4) for r in range(4)]
    assert its[0].steps_per_epoch == 5
    seen = torch.cat([_ids(next(it)) for _ in range(5) for it in its])
    assert sorted(seen.tolist()) == list(range(1000))


def test_iterator_errors():
    images, _ = _coded(100)
    with pytest.raises(DataError, match="larger than the dataset"):
        data.BatchIterator(images, 101)
    with pytest.raises(DataError, match="labels"):
        data.BatchIterator(images, 10, labels=torch.arange(99))
    with pytest.raises(DataError, match="positive"):
        data.BatchIterator(images, 0)
