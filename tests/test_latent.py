"""The autoencoders (kl-autoencoder, vq-vae) and the latent models over them
(latent-diffusion, vq-transformer): training, the codebook, the bond to the autoencoder run
(hash-checked), the bounds, and the CLI as a user runs it."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_one_line_error
from helpers import zoo_main as zoo_cli

import zoo
from zoo import data
from zoo.core import CheckpointError, ConfigError, LikelihoodUnavailable
from zoo.metrics import reconstruction
from zoo.nn.autoencoder import VectorQuantizer
from zoo.nn.likelihood import LN2, discretized_gaussian_log_prob, to_unit

SMALL_AE = {"channels": 8}


@pytest.fixture(scope="module")
def mnist():
    x, y = data.load("mnist", "train")
    return x[:2048], y[:2048]


def _train(model, x, steps: int, batch: int = 32, labels=None):
    from zoo.core import Batch

    opt = model.configure_optimizers()
    out = []
    for i in range(steps):
        j = (i * batch) % x.shape[0]
        xb = x[j:j + batch]
        yb = labels[j:j + batch] if labels is not None else None
        out.append(model.train_step(xb if yb is None else Batch(xb, yb), opt))
    return out


@pytest.fixture(scope="module")
def autoencoders(mnist, tmp_path_factory):
    """A briefly trained kl-autoencoder and vq-vae, saved as model files."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ae")
    x, _ = mnist
    paths = {}
    for name in ("kl-autoencoder", "vq-vae"):
        ae = zoo.create(name, "mnist", **SMALL_AE)
        _train(ae, x, 40)
        ae.save(root / f"{name}.pt")
        paths[name] = root / f"{name}.pt"
    return paths


@pytest.mark.slow
def test_autoencoders_learn_to_reconstruct(mnist):
    torch.manual_seed(0)
    x, _ = mnist
    for name in ("kl-autoencoder", "vq-vae"):
        ae = zoo.create(name, "mnist", **SMALL_AE)
        held = data.load("mnist", "test")[0][:256]
        before = reconstruction.psnr(held, ae.reconstruct(held)).mean()
        losses = _train(ae, x, 60)
        after = reconstruction.psnr(held, ae.reconstruct(held)).mean()
        assert losses[-1]["mse"] < 0.5 * losses[0]["mse"], name
        assert after > before + 3, (name, before, after)
        assert ae.latent_shape[1:] == (7, 7)
        # the learned decoder scale follows the reconstruction error (sigma^2 -> mse)
        assert ae.log_sigma.item() < math.log(0.1) + 0.5


def test_sides_that_do_not_halve_are_one_clear_error():
    with pytest.raises(ConfigError, match="multiples of 4.*size=32"):
        zoo.create("vq-vae", image_shape=(3, 30, 30))


def test_vector_quantizer_ema_reaches_the_cluster_means_and_restarts_dead_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(codes=4, dim=2, decay=0.5)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    z = (centres.repeat_interleave(20, 0) + 0.1 * torch.randn(60, 2)).T.reshape(1, 2, 60, 1)
    gen = torch.Generator().manual_seed(0)
    restarted = vq.update(z, vq.indices(z), gen)
    assert restarted >= 1  # counts start at zero: the unused codes restart at data vectors
    for _ in range(30):
        vq.update(z, vq.indices(z), gen)
    idx = vq.indices(z).reshape(-1)
    flat = z.reshape(2, -1).T
    for k in idx.unique():
        members = flat[idx == k]
        assert torch.allclose(vq.embed[k], members.mean(0), atol=1e-3)
    # every cluster has a code at it (with 4 codes for 3 clusters one is split in two)
    assert torch.cdist(centres, vq.embed).min(1).values.max() < 0.5
    # straight-through: the quantized output carries the gradient to z unchanged
    zz = z.clone().requires_grad_(True)
    q, _ = vq(zz)
    q.sum().backward()
    assert torch.equal(zz.grad, torch.ones_like(zz))


def test_codebook_usage_counts_perplexity_and_dead_codes():
    ae = zoo.create("vq-vae", "mnist", **SMALL_AE, codes=8)
    codes = torch.tensor([[0, 0], [1, 1]])
    usage = ae.usage(codes)
    assert usage["perplexity"] == pytest.approx(2.0)
    assert usage["dead_codes"] == 6 and usage["codes"] == 8


@pytest.mark.slow
def test_latent_models_need_their_autoencoder_and_say_so(autoencoders, tmp_path):
    with pytest.raises(ConfigError, match="autoencoder=RUN.*kl-autoencoder"):
        zoo.create("latent-diffusion", "mnist")
    with pytest.raises(ConfigError, match="works over a vq-vae"):
        zoo.create("vq-transformer", "mnist", autoencoder=str(autoencoders["kl-autoencoder"]))
    with pytest.raises(ConfigError, match="holds no trained model"):
        zoo.create("latent-diffusion", "mnist", autoencoder=str(tmp_path))
    with pytest.raises(ConfigError, match="filled in by zoo"):
        zoo.create("vq-transformer", "mnist", autoencoder=str(autoencoders["vq-vae"]),
                   autoencoder_spec="{}")
    with pytest.raises(ConfigError, match="shape"):
        zoo.create("latent-diffusion", image_shape=(3, 28, 28),
                   autoencoder=str(autoencoders["kl-autoencoder"]))


@pytest.mark.slow
@pytest.mark.parametrize("name,ae", [("latent-diffusion", "kl-autoencoder"),
                                     ("vq-transformer", "vq-vae")])
def test_a_latent_checkpoint_holds_both_stages_and_checks_the_hash(name, ae, autoencoders,
                                                                   mnist, tmp_path):
    x, _ = mnist
    m = zoo.create(name, "mnist", autoencoder=str(autoencoders[ae]))
    first = m.autoencoder.state_dict()
    _train(m, x, 3)
    # the autoencoder is frozen: training the second stage leaves it as it was
    assert all(torch.equal(v, m.autoencoder.state_dict()[k]) for k, v in first.items())
    path = tmp_path / "m.pt"
    m.save(path)
    autoencoders[ae].rename(tmp_path / "moved.pt")  # the original run is gone: still loads
    try:
        back = zoo.load(path)
    finally:
        (tmp_path / "moved.pt").rename(autoencoders[ae])
    opts = {"sampler": "ddim", "steps": 3} if name == "latent-diffusion" else {}
    a = m.sample(4, generator=torch.Generator().manual_seed(1), **opts)
    b = back.sample(4, generator=torch.Generator().manual_seed(1), **opts)
    assert a.dtype == torch.uint8 and a.shape == (4, 1, 28, 28)
    assert torch.equal(a, b)
    ckpt = torch.load(path, weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.startswith("autoencoder.decoder"))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 0.01
    torch.save(ckpt, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="not the ones it was trained over"):
        zoo.load(tmp_path / "edited.pt")


@pytest.mark.slow
def test_latent_diffusion_runs_in_unit_variance_latents_and_does_not_clip(autoencoders,
                                                                          mnist):
    x, _ = mnist
    m = zoo.create("latent-diffusion", "mnist", autoencoder=str(autoencoders["kl-autoencoder"]))
    z = m.to_space(x[:512])
    assert z.shape == (512, 4, 7, 7)
    assert 0.7 < float(z.std()) < 1.4  # the autoencoder's running std, of its last batches
    assert m.parse_sampler({"sampler": "ddim"}).clip_x0 is False
    assert m.parse_sampler({}).clip_x0 is False
    with pytest.raises(LikelihoodUnavailable, match="no likelihood"):
        m.nll(x[:2])
    assert m.reconstruct(x[:3]).shape == (3, 1, 28, 28)


@pytest.mark.slow
def test_vq_transformer_bound_is_prior_cross_entropy_plus_decoder_term(autoencoders, mnist):
    x, _ = mnist
    m = zoo.create("vq-transformer", "mnist", autoencoder=str(autoencoders["vq-vae"]),
                   dim=32, depth=1, heads=2)
    _train(m, x, 5)
    xb = x[:6]
    got = m.nll(xb, batch_size=4)
    ae = m.autoencoder
    with torch.no_grad():
        codes = ae.encode(xb).reshape(6, -1)
        logp = F.log_softmax(m.forward(codes).float(), -1).gather(-1, codes[..., None])
        prior = -logp.squeeze(-1).sum(1)
        mean = ae.decode(codes.view(6, 7, 7))
        scale = ae.log_sigma.clamp(min=-7.0).expand_as(mean)
        dec = -discretized_gaussian_log_prob(to_unit(xb), mean, scale).flatten(1).sum(1)
    want = (prior + dec) / (784 * LN2)
    assert torch.allclose(got, want, rtol=1e-4)
    # the uniform prior's bound is looser than the learned prior's once it has trained
    assert m.vocab == 256 and m.seq_len == 49
    with pytest.raises(ConfigError, match="prefix"):
        m.sample(1, prefix=torch.zeros(1, 1, 1, 28, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="top_k must be in 1..256"):
        m.sample(1, top_k=300)


@pytest.mark.slow
def test_conditional_latent_models_take_labels(autoencoders, mnist):
    x, y = mnist
    for name, ae in (("latent-diffusion", "kl-autoencoder"), ("vq-transformer", "vq-vae")):
        m = zoo.create(name, "mnist", autoencoder=str(autoencoders[ae]), conditional=True)
        assert m.num_classes == 10
        _train(m, x, 2, labels=y)
        opts = {"sampler": "ddim", "steps": 2} if name == "latent-diffusion" else {}
        s = m.sample(3, labels=torch.tensor([0, 1, 2]), guidance=2.0,
                     generator=torch.Generator().manual_seed(0), **opts)
        assert s.shape == (3, 1, 28, 28)


@pytest.mark.slow
def test_the_two_stages_through_the_cli(tmp_path):
    """As a user: train a vq-vae, a vq-transformer over it, sample, eval (with the
    reconstruction figures); an autoencoder's eval has them too."""
    ae, prior = tmp_path / "vq", tmp_path / "prior"
    zoo_cli("train", "vq-vae", "--dataset", "fashion-mnist", "--steps", "20", "--out", str(ae),
            "--set", "channels=8", "--batch-size", "32")
    zoo_cli("train", "vq-transformer", "--dataset", "fashion-mnist", "--steps", "5",
            "--out", str(prior), "--set", f"autoencoder={ae}", "--set", "dim=32",
            "--set", "depth=1", "--batch-size", "16")
    info = json.loads((prior / "run.json").read_text())
    assert len(info["model_config"]["autoencoder_sha256"]) == 64
    card = (prior / "README.md").read_text()
    assert f"--set autoencoder={ae}" in card and "autoencoder_spec" not in card
    zoo_cli("sample", str(prior), "-n", "4", "-o", str(tmp_path / "grid.png"))
    assert (tmp_path / "grid.png").stat().st_size > 0
    proc = zoo_cli("eval", str(prior), "--n", "64", "--metrics", "fid", "--bootstrap", "20")
    assert "reconstructions of 64 test images" in proc.stdout
    assert "codebook" in proc.stdout and "PSNR" in proc.stdout
    result = json.loads((prior / "eval.json").read_text())
    assert result["recon_psnr"] > 5 and result["recon_fid"] >= 0
    assert result["recon_psnr_ci95"][0] < result["recon_psnr"] < result["recon_psnr_ci95"][1]
    missing = zoo_cli("train", "latent-diffusion", "--dataset", "fashion-mnist", "--steps", "1",
                      "--out", str(tmp_path / "ld"), check=False)
    assert_one_line_error(missing, "autoencoder=RUN")
    wrong = zoo_cli("train", "latent-diffusion", "--dataset", "fashion-mnist", "--steps", "1",
                    "--out", str(tmp_path / "ld2"), "--set", f"autoencoder={ae}", check=False)
    assert_one_line_error(wrong, "works over a kl-autoencoder")


@pytest.mark.slow
def test_latent_models_on_a_folder_of_32x32_colour_images(tmp_path):
    """Both pairs train and sample on a folder of colour images (8x8 latents at 32x32)."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        base = rng.integers(0, 256, (1, 1, 3))
        img = np.clip(base + rng.integers(-40, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    for ae_name, latent, extra in (("kl-autoencoder", "latent-diffusion",
                                    ["--set", "channels=16"]),
                                   ("vq-vae", "vq-transformer",
                                    ["--set", "dim=32", "--set", "depth=1"])):
        ae, run = tmp_path / ae_name, tmp_path / latent
        zoo_cli("train", ae_name, "--dataset", str(folder), "--steps", "3", "--out", str(ae),
                "--set", "channels=8", "--batch-size", "8")
        zoo_cli("train", latent, "--dataset", str(folder), "--steps", "2", "--out", str(run),
                "--set", f"autoencoder={ae}", "--batch-size", "8", *extra)
        zoo_cli("sample", str(run), "-n", "4", "-o", str(tmp_path / f"{latent}.png"),
                "--scale", "1", *(["--set", "sampler=ddim", "--set", "steps=3"]
                                  if latent == "latent-diffusion" else []))
        with Image.open(tmp_path / f"{latent}.png") as grid:
            assert grid.mode == "RGB"
        model = zoo.load(run / "model.pt")
        assert model.image_shape == (3, 32, 32)
        assert model.autoencoder.latent_shape[1:] == (8, 8)


def test_a_latent_checkpoint_without_its_autoencoder_hash_is_refused(tmp_path, capsys):
    """A blank or missing autoencoder_sha256 does not turn the hash check off: the edited
    weights are refused on load, and through `zoo sample` as one line."""
    from zoo.cli import main

    ae = zoo.create("kl-autoencoder", "mnist", **SMALL_AE)
    ae.save(tmp_path / "ae.pt")
    m = zoo.create("latent-diffusion", "mnist", autoencoder=str(tmp_path / "ae.pt"),
                   channels=8, norm_groups=4, timesteps=20)
    m.save(tmp_path / "m.pt")
    for sha in ("", None):
        ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
        config = json.loads(ckpt["config"])
        if sha is None:
            del config["autoencoder_sha256"]
        else:
            config["autoencoder_sha256"] = sha
        ckpt["config"] = json.dumps(config)
        key = next(k for k in ckpt["state_dict"] if k.startswith("autoencoder.decoder"))
        ckpt["state_dict"][key] = ckpt["state_dict"][key] + 0.01
        edited = tmp_path / "edited.pt"
        torch.save(ckpt, edited)
        with pytest.raises(CheckpointError, match="records no autoencoder_sha256"):
            zoo.load(edited)
    grid = tmp_path / "grid.png"
    assert main(["sample", str(edited), "-n", "2", "-o", str(grid)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error: ") and "\n" not in err
    assert "records no autoencoder_sha256" in err and str(edited) in err
    assert not grid.exists()
