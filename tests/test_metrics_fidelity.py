"""Metrics: the shipped classifiers on the real test splits, FID/KID/IS/PR sanity on real
data, the reference-feature cache, the InceptionV3 path (with generated weights, since the
real ones need a download), torchmetrics against torch-fidelity, the training script and
`zoo eval`.

Figures measured on the CI machine (2 CPU cores) are quoted beside each threshold.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import zoo
from zoo import data, metrics
from zoo.core import CheckpointError, ConfigError
from zoo.metrics import features as feats

N = 2000  # generated images in the quality checks, as in a per-family FID test
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("cache_env")


@pytest.fixture(scope="module")
def mnist():
    return data.load("mnist", "train")[0], *data.load("mnist", "test")


@pytest.fixture(scope="module")
def mnist_clf():
    return metrics.resolve_extractor("mnist-classifier", "mnist", announce=False)


def uniform_noise(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)


# -- the shipped classifiers ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dataset,minimum", [("mnist", 0.990), ("fashion-mnist", 0.91)])
def test_shipped_classifier_accuracy_on_the_real_test_split(dataset, minimum):
    name = f"{dataset}-classifier"
    card, weights = feats.classifier_card(name)
    assert feats.file_sha256(weights) == card["sha256"]
    assert weights.stat().st_size < 1_000_000  # a few hundred KB, shipped in the package
    ext = metrics.resolve_extractor(name, dataset, announce=False)
    out = metrics.reference_features(dataset, "test", ext, ("features", "logits"))
    _, labels = data.load(dataset, "test")
    acc = (out["logits"].argmax(1) == labels).double().mean().item()
    # measured: mnist 0.9937, fashion-mnist 0.9252 (also in the cards)
    assert acc >= minimum, f"{name}: test accuracy {acc:.4f}"
    assert abs(acc - card["test_accuracy"]) < 2e-3
    assert out["features"].shape == (10000, card["config"]["feature_dim"])


def test_classifier_weights_that_do_not_match_their_card_are_refused(tmp_path):
    card, weights = feats.classifier_card("mnist-classifier")
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "x-classifier.pt").write_bytes(bytes(blob))
    shutil.copy(weights.with_suffix(".json"), tmp_path / "x-classifier.json")
    with pytest.raises(CheckpointError, match="sha256"):
        feats.load_classifier(tmp_path / "x-classifier.pt")
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        metrics.resolve_extractor("cifar-classifier", "mnist", announce=False)


# -- the figures on real data -------------------------------------------------------------------


@pytest.mark.slow
def test_fid_of_the_test_split_with_itself_is_zero_and_its_is_near_ten(mnist, mnist_clf):
    _, x_test, _ = mnist
    r = metrics.evaluate(x_test, "mnist", extractor="mnist-classifier", metrics=("fid", "is"))
    assert r["n_generated"] == r["n_reference"] == 10000
    assert abs(r["fid"]) < 1e-3  # measured 8e-12 (identical features: numerical noise only)
    assert 9.3 < r["is"] <= 10.0  # measured 9.63 ± 0.03 (10 balanced classes, ~99% accuracy)
    assert r["extractor"] == "mnist-classifier"
    assert r["extractor_weights_sha256"] == mnist_clf.sha256
    assert r["extractor_choice"] == "explicit"


@pytest.mark.slow
def test_fid_noise_floor_and_uniform_noise(mnist):
    x_train, _, _ = mnist
    floor = metrics.fid(x_train[:N], "mnist", extractor="mnist-classifier")
    noise = metrics.fid(uniform_noise(N), "mnist", extractor="mnist-classifier")
    # measured: real train images 0..1999 vs the test split 0.094 (the noise floor at
    # N=2000; 2000..3999 gave 0.123), uniform noise 352
    assert 0 < floor < 0.3, floor
    assert noise > 150, noise


@pytest.mark.slow
def test_kid_precision_recall_of_two_halves_of_one_split(mnist, mnist_clf):
    _, x_test, _ = mnist
    # a random split: MNIST's test set is ordered (its first 5000 digits are cleaner)
    half = x_test[torch.randperm(10000, generator=torch.Generator().manual_seed(0))[:2 * N]]
    r, status = metrics.compute_metrics(half[:N], half[N:], mnist_clf, ("fid", "kid", "pr"))
    assert status == "off"
    # measured: KID -0.0007 ± 0.0031 (std over subsets), precision 0.92, recall 0.91 (k=3
    # neighbourhoods: real vs real stays below 1), FID 0.16 (2000 vs 2000)
    assert abs(r["kid"]) < 0.005, r
    assert r["precision"] > 0.85 and r["recall"] > 0.85, r
    assert r["fid"] < 0.5, r


def test_kid_and_is_take_any_64_bit_seed(mnist_clf):
    """A suite's or --seed's 64-bit seed reaches torch-fidelity's 32-bit numpy seed reduced."""
    x, y = uniform_noise(40, 1), uniform_noise(40, 2)
    r, _ = metrics.compute_metrics(x, y, mnist_clf, ("kid", "is"), seed=2**63 - 1,
                                   batch_size=40)
    same, _ = metrics.compute_metrics(x, y, mnist_clf, ("kid", "is"),
                                      seed=(2**63 - 1) % 2**32, batch_size=40)
    assert r["kid"] == same["kid"] and r["is"] == same["is"]


# -- the reference cache ----------------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch):
    """Counts the images the classifier extractor sees."""
    seen = {"images": 0}
    forward = feats.ClassifierExtractor.forward

    def counting(self, x):
        seen["images"] += x.shape[0]
        return forward(self, x)

    monkeypatch.setattr(feats.ClassifierExtractor, "forward", counting)
    return seen


@pytest.mark.slow
def test_reference_features_are_cached_and_any_key_change_recomputes(
    mnist, tmp_path, counted
):
    x_train, _, _ = mnist
    samples = x_train[:300]
    opts = {"extractor": "mnist-classifier", "n_reference": 500, "cache_dir": tmp_path,
            "metrics": ("fid", "kid", "is", "pr")}

    def run(**kw) -> dict:
        counted["images"] = 0
        return metrics.evaluate(samples, "mnist", **{**opts, **kw})

    first = run()
    assert (first["reference_cache"], counted["images"]) == ("miss", 800)
    second = run()
    assert (second["reference_cache"], counted["images"]) == ("hit", 300)
    assert {k: second[k] for k in ("fid", "kid", "is", "precision", "recall")} == \
        {k: first[k] for k in ("fid", "kid", "is", "precision", "recall")}
    assert (run(metrics=("fid",))["reference_cache"], counted["images"]) == ("hit", 300)

    # each part of the key: the split, the number of reference images, the weights
    fid_only = {"metrics": ("fid",)}
    assert (run(split="train", **fid_only)["reference_cache"], counted["images"]) == \
        ("miss", 800)
    assert (run(n_reference=400, **fid_only)["reference_cache"], counted["images"]) == \
        ("miss", 700)
    card, weights = feats.classifier_card("mnist-classifier")
    state = torch.load(weights, weights_only=True)
    state["hidden.bias"] += 0.01
    blob = feats.save_bytes(state)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mnist-classifier.pt").write_bytes(blob)
    card["sha256"] = hashlib.sha256(blob).hexdigest()
    (tmp_path / "w" / "mnist-classifier.json").write_text(json.dumps(card))
    other = run(extractor=tmp_path / "w" / "mnist-classifier.pt", **fid_only)
    assert (other["reference_cache"], counted["images"]) == ("miss", 800)
    assert other["extractor_weights_sha256"] == card["sha256"] != first["extractor_weights_sha256"]
    assert other["fid"] != first["fid"]

    ext = metrics.resolve_extractor("mnist-classifier", "mnist", announce=False)
    keys = {metrics.reference_key(d, s, n, ext)[0]
            for d, s, n in [("mnist", "test", 500), ("mnist", "train", 500),
                            ("mnist", "test", 400), ("fashion-mnist", "test", 500)]}
    assert len(keys) == 4

    # a damaged cache file is noticed and recomputed, not an EOFError from deep inside
    for p in tmp_path.glob(f"{metrics.reference_key('mnist', 'test', 500, ext)[0]}-*.pt"):
        p.write_bytes(p.read_bytes()[:100])
    assert (run(**fid_only)["reference_cache"], counted["images"]) == ("miss", 800)


# -- torchmetrics for streaming evaluation --------------------------------------------------


def test_streaming_fid_agrees_with_torch_fidelity(mnist):
    x_train, _, _ = mnist
    x = x_train[:1000].clone()
    x[::2] = 255 - x[::2]  # half of them inverted: a clearly imperfect "model" (FID 20.8)
    expected = metrics.fid(x, "mnist", extractor="mnist-classifier")
    stream = metrics.StreamingFID("mnist", extractor="mnist-classifier", announce=False)
    assert stream.n_reference == 10000
    for batch in x.split(300):
        stream.update(batch)
    got = stream.compute()
    assert abs(got - expected) / expected < 1e-3, (got, expected)
    stream.reset()
    for batch in x.split(500):
        stream.update(batch)
    assert abs(stream.compute() - got) / got < 1e-6
    assert stream.record()["extractor"] == "mnist-classifier"


def _ddp_rank(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        x = data.load("mnist", "train")[0][:1000].clone()
        x[::2] = 255 - x[::2]
        stream = metrics.StreamingFID("mnist", extractor="mnist-classifier", announce=False)
        stream.update(x[rank::world])  # each rank sees half of the generated images
        queue.put((rank, stream.compute()))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.slow
def test_streaming_fid_syncs_across_two_ddp_processes(mnist, cache_env):
    import socket

    import torch.multiprocessing as mp

    x_train, _, _ = mnist
    x = x_train[:1000].clone()
    x[::2] = 255 - x[::2]
    expected = metrics.fid(x, "mnist", extractor="mnist-classifier")  # also fills the cache
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_ddp_rank, args=(2, port, queue), nprocs=2)
    got = dict(queue.get() for _ in range(2))
    # measured: both ranks 20.773924, one process 20.773927
    assert got[0] == got[1]
    assert abs(got[0] - expected) / expected < 1e-4, (got, expected)


# -- InceptionV3 ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory) -> Path:
    """torch-fidelity's InceptionV3 architecture, randomly initialised, saved as a state dict."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None)
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():  # He init keeps the activations from vanishing in depth
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_path_with_generated_weights_and_grayscale_input(random_inception, capsys):
    x = torch.cat([uniform_noise(1), data.load("mnist", "test")[0][:1]])
    # KID and IS: FID on 2048 features spends ~10 s in numpy's eigvals, the rest is the same
    r = metrics.evaluate(x, "mnist", extractor="inception-v3-compat", n_reference=2,
                         inception_weights=random_inception, metrics=("kid", "is"),
                         cache=False)
    assert r["extractor"] == "inception-v3-compat"
    assert r["extractor_weights_sha256"] == feats.file_sha256(random_inception)
    assert r["extractor_official_weights"] is False
    assert "not the standard ones" in capsys.readouterr().err
    assert math.isfinite(r["kid"]) and r["kid"] > 0 and math.isfinite(r["is"])


def test_default_extractor_is_announced_and_recorded(random_inception, monkeypatch, capsys):
    ext = metrics.resolve_extractor(None, "fashion-mnist")
    assert ext.name == "fashion-mnist-classifier"
    assert "InceptionV3 weights not found" in ext.choice
    assert "fashion-mnist-classifier" in capsys.readouterr().err
    monkeypatch.setenv("ZOO_INCEPTION_WEIGHTS", str(random_inception))
    ext = metrics.resolve_extractor(None, "mnist")
    assert ext.name == "inception-v3-compat" and str(random_inception) in ext.choice
    assert "inception-v3-compat" in capsys.readouterr().err


def test_bad_inception_weights_are_clear_errors(random_inception, tmp_path, monkeypatch):
    x = uniform_noise(2)
    kw = {"extractor": "inception-v3-compat", "n_reference": 2, "metrics": ("fid",),
          "cache": False, "announce": False}
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(random_inception.read_bytes()[:1_000_000])
    with pytest.raises(CheckpointError, match="truncated"):
        metrics.evaluate(x, "mnist", inception_weights=truncated, **kw)
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(CheckpointError, match="InceptionV3"):
        metrics.evaluate(x, "mnist", inception_weights=wrong, **kw)
    with pytest.raises(CheckpointError, match="do not exist"):
        metrics.evaluate(x, "mnist", inception_weights=tmp_path / "missing.pth", **kw)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(metrics.MetricsError, match="ZOO_INCEPTION_WEIGHTS"):
        metrics.evaluate(x, "mnist", **kw)


# -- bad input --------------------------------------------------------------------------------


def test_bad_input_is_a_config_error(mnist):
    x_train, _, _ = mnist
    kw = {"extractor": "mnist-classifier", "announce": False}
    with pytest.raises(ConfigError, match="uint8"):
        metrics.evaluate(x_train[:10].float(), "mnist", **kw)
    with pytest.raises(ConfigError, match="unknown metric"):
        metrics.evaluate(x_train[:10], "mnist", metrics="fid,lpips", **kw)
    with pytest.raises(ConfigError, match="need a model"):
        metrics.evaluate(x_train[:10], "mnist", steps=10, **kw)
    with pytest.raises(ConfigError, match="makes"):
        metrics.evaluate(zoo.create("vae-mlp", image_shape=(3, 32, 32), hidden=8), "mnist", **kw)
    with pytest.raises(ConfigError, match=r"\(3, 32, 32\)"):
        metrics.evaluate(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), "mnist", **kw)
    with pytest.raises(ConfigError, match="at least 4"):
        metrics.evaluate(x_train[:3], "mnist", metrics=("pr",), **kw)


# -- zoo eval --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    from zoo.train import Trainer

    out = tmp_path_factory.mktemp("eval") / "vae"
    torch.manual_seed(0)
    model = zoo.create("vae-mlp", dataset="mnist", hidden=64)
    Trainer(model, "mnist", out, steps=30, progress=False).fit()
    return out


@pytest.mark.slow
def test_cli_eval_prints_a_table_and_writes_json(vae_run, capsys):
    from zoo.cli import main

    rc = main(["eval", str(vae_run), "--n", "500", "--metrics", "fid,kid,is",
               "--extractor", "mnist-classifier", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "FID" in captured.out and "mnist-classifier" in captured.out
    result = json.loads((vae_run / "eval.json").read_text())
    assert result["n_generated"] == 500 and result["n_reference"] == 10000
    assert result["model"] == "vae-mlp" and result["kid_subset_size"] == 500
    assert result["fid"] > 20  # 30 training steps: far from the data (measured 95)


def test_cli_eval_warns_of_a_reference_set_below_the_minimum(vae_run, tmp_path, capsys):
    """A small own dataset (here 180 MNIST test images in an array) is the reference of
    too few images for a FID: zoo eval says so on stderr, and the card beside the figures."""
    import numpy as np

    from zoo.cli import main
    from zoo.metrics.registry import MIN_REFERENCE_IMAGES

    x, _ = data.load("mnist", "test")
    np.save(tmp_path / "small.npy", x[:900, 0].numpy())
    args = ["eval", str(vae_run), "--n", "50", "--metrics", "fid", "--bootstrap", "0",
            "--extractor", "mnist-classifier", "--device", "cpu", "--panel", "0"]
    assert main([*args, "--dataset", f"{tmp_path / 'small.npy'}?test_size=180"]) == 0
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert line.startswith("zoo eval: warning: only 180 reference images")
    assert f"{MIN_REFERENCE_IMAGES:,}" in line
    (how,) = [ln for ln in (vae_run / "README.md").read_text().splitlines()
              if ln.startswith("Measured by `zoo eval`")]
    assert "against 180 images" in how and "Note: only 180 reference images" in how
    assert main([*args, "--json", str(tmp_path / "big.json")]) == 0  # mnist: 10,000 images
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("args,needle", [
    (["--metrics", "fid,lpips"], "unknown metric"),
    (["--extractor", "nope"], "unknown feature extractor"),
    (["--set", "temperature=2"], "unknown sampler option"),
])
def test_cli_eval_errors_are_one_line(vae_run, capsys, args, needle):
    from zoo.cli import main

    rc = main(["eval", str(vae_run), "--n", "20", "--device", "cpu", *args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("zoo: error:")]
    assert rc == 2 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_trainer_logs_streaming_fid_every_n_steps(tmp_path):
    from zoo.train import Trainer

    torch.manual_seed(0)
    model = zoo.create("vae-mlp", dataset="mnist", hidden=64)
    Trainer(model, "mnist", tmp_path / "run", steps=40, eval_every=20, eval_n=200,
            eval_extractor="mnist-classifier", progress=False).fit()
    rows = (tmp_path / "run" / "eval.csv").read_text().splitlines()
    assert rows[0] == "step,fid,n,extractor,extractor_sha256"
    steps = [int(r.split(",")[0]) for r in rows[1:]]
    fids = [float(r.split(",")[1]) for r in rows[1:]]
    assert steps == [20, 40] and all(math.isfinite(f) and f > 0 for f in fids)
    assert all(r.split(",")[3] == "mnist-classifier" for r in rows[1:])
