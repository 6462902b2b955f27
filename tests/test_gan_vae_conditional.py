"""Class-conditional GANs and VAEs: unconditional models unchanged, the
conditional networks and losses, the label checks, the VAE's conditional and marginal
bounds, and conditioning that is real (the shipped MNIST classifier reads the asked
classes in samples of briefly trained models)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import FLOAT32_RTOL

import zoo
from zoo import data as zdata
from zoo.core import Batch, ConfigError
from zoo.models.gan import ConditionalBatchNorm2d, ProjectionDiscriminator

SMALL = {
    "gan-mlp": {"g_hidden": (32, 64), "d_hidden": (64, 32)},
    "gan-dcgan": {"channels": 8},
    "vae-mlp": {},
    "vae-conv": {},
}
# per-tensor sum and sum of squares (float64) of the initial state_dict of SMALL[name] on
# MNIST after torch.manual_seed(0), computed before conditioning existed (commit 2bb93dd; there
# its sha256 began 7763e878, e7f8c483, 35396406, 468dd1f6); compared up to float32 rounding
STATE_BEFORE = json.loads(
    (Path(__file__).parent / "data" / "conditional-state-before-2bb93dd.json").read_text())


pytestmark = pytest.mark.usefixtures("one_thread")


def build(name: str, **kw):
    torch.manual_seed(0)
    return zoo.create(name, dataset="mnist", **{**SMALL[name], **kw})


def assert_state_before(model, name: str) -> None:
    """``model``'s parameters are those of SMALL[name] before conditioning existed."""
    before = STATE_BEFORE[name]
    state = model.state_dict()
    assert list(state) == before["__keys__"]
    for key, value in state.items():
        if value.is_floating_point():
            v = value.double()
            total, squares = before[key]
            # a sum may cancel to near zero: its rounding scales with sum |v| <= sqrt(n * sumsq)
            slack = FLOAT32_RTOL * math.sqrt(v.numel() * squares)
            assert abs(float(v.sum()) - total) <= slack, key
            assert float(v.square().sum()) == pytest.approx(squares, rel=FLOAT32_RTOL), key


def seeded(model, n=8, **kw):
    return model.sample(n, generator=torch.Generator().manual_seed(0), **kw)


def mnist_batch(n=20, seed=0) -> Batch:
    x, y = zdata.load("mnist", "test")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return Batch(x[idx], y[idx])


# -- unconditional models are unchanged -------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_unconditional_model_unchanged(name, tmp_path):
    """Same parameters as before conditioning existed (pinned sums), conditional=False is the
    default, and a checkpoint written before (config without the new keys) loads and samples
    bit-identically."""
    model, explicit = build(name), build(name, conditional=False)
    assert not model.conditional and model.num_classes is None
    assert_state_before(model, name)
    assert_state_before(explicit, name)
    assert torch.equal(seeded(model), seeded(explicit))
    path = tmp_path / "old.pt"
    model.save(path)
    ckpt = torch.load(path, weights_only=True)
    config = json.loads(ckpt["config"])
    del config["conditional"], config["num_classes"]
    ckpt["config"] = json.dumps(config)
    torch.save(ckpt, path)
    old = zoo.load(path)
    assert not old.conditional
    if name.startswith("gan"):  # save() stores standing BatchNorm statistics
        model.recalibrate_batchnorm()
    assert torch.equal(seeded(old), seeded(model))


# -- networks -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gan-mlp", "gan-dcgan"])
def test_conditional_gan_networks(name):
    m = build(name, conditional=True)
    assert m.conditional and m.num_classes == 10
    assert isinstance(m.disc, ProjectionDiscriminator)
    if name == "gan-dcgan":
        cbns = [x for x in m.gen.modules() if isinstance(x, ConditionalBatchNorm2d)]
        assert len(cbns) == 2
        for c in cbns:
            assert torch.equal(c.gain.weight, torch.ones_like(c.gain.weight))
            assert torch.equal(c.bias.weight, torch.zeros_like(c.bias.weight))
    assert m.gen.embed.weight.shape == (10, m.config.latent_dim)
    # D(x, y) = psi(phi(x)) + <embed(y), phi(x)>
    x = torch.randn(4, 1, 28, 28)
    y = torch.tensor([0, 3, 3, 9])
    phi = m.disc.body(x)
    want = m.disc.head(phi).flatten() + (m.disc.embed(y) * phi.flatten(1)).sum(1)
    assert torch.allclose(m.disc(x, y), want, atol=1e-5)
    # the labels reach both networks
    z = torch.randn(4, m.config.latent_dim)
    with torch.no_grad():
        m.disc.embed.weight.normal_()
        if name == "gan-dcgan":
            for c in m.gen.modules():
                if isinstance(c, ConditionalBatchNorm2d):
                    c.bias.weight.normal_()
    assert not torch.allclose(m.disc(x, y), m.disc(x, (y + 1) % 10))
    assert not torch.allclose(m.gen(z, y), m.gen(z, (y + 1) % 10))


@pytest.mark.parametrize("name", ["gan-mlp", "gan-dcgan"])
@pytest.mark.parametrize("loss", ["ns", "hinge", "wgan-gp"])
def test_every_gan_loss_trains_conditionally(name, loss):
    m = build(name, conditional=True, loss=loss)
    opt = m.configure_optimizers()
    before = {k: v.clone() for k, v in m.state_dict().items() if "embed" in k or "gain" in k}
    out = m.train_step(mnist_batch(), opt)
    assert all(math.isfinite(v) for v in out.values()), out
    assert ("gp" in out) == (loss == "wgan-gp")
    after = m.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # class weights learn
    s = seeded(m, 4, labels=[0, 1, 2, 3])
    assert s.shape == (4, 1, 28, 28) and s.dtype == torch.uint8


def test_conditional_gan_mode_seeking_term():
    """A conditional GAN's G loss adds diversity / ratio, ratio the mean image distance of
    the fake pairs (i, i + b//2) over their latents', pairs that share a class; an
    unconditional GAN adds nothing unless diversity is given."""
    from zoo.models.gan import DIVERSITY, _paired_labels, mode_seeking_ratio

    assert torch.equal(_paired_labels(torch.tensor([3, 1, 4, 1, 5])),
                       torch.tensor([3, 1, 3, 1, 5]))
    z = torch.zeros(4, 2)
    z[2:] = 1.0  # |z1 - z2| = 1 per coordinate
    img = torch.zeros(4, 1, 2, 2)
    img[2:] = 0.5
    assert mode_seeking_ratio(img, z).item() == pytest.approx(0.5)
    m = build("gan-dcgan", conditional=True)
    assert m.diversity == DIVERSITY > 0
    seen = []
    real_d = m.disc.forward
    m.disc.forward = lambda x, y: (seen.append(y.clone()), real_d(x, y))[1]
    out = m.train_step(mnist_batch(16), m.configure_optimizers())
    assert out["mode_seeking"] > 0 and math.isfinite(out["loss_g"])
    y = mnist_batch(16).labels
    fake_labels = torch.cat([y[:8], y[:8]])
    assert torch.equal(seen[0], y) and torch.equal(seen[1], fake_labels)
    assert torch.equal(seen[2], fake_labels)  # the G update scores the paired fakes
    assert build("gan-dcgan").diversity == 0.0
    assert "mode_seeking" not in build("gan-dcgan").train_step(
        mnist_batch(16), build("gan-dcgan").configure_optimizers())
    assert build("gan-dcgan", diversity=0.5).diversity == 0.5


@pytest.mark.parametrize("name", ["vae-mlp", "vae-conv"])
def test_conditional_vae_trains_and_samples(name):
    m = build(name, conditional=True)
    u = build(name)
    keys = set(m.state_dict())
    # same layers; the one-hot widens the encoder's first dense layer and every decoder layer
    assert keys == set(u.state_dict())
    wider = sorted(k for k in keys if m.state_dict()[k].shape != u.state_dict()[k].shape)
    decoder_layers = [k for k in keys if k.startswith("decoder.") and k.endswith("weight")]
    assert wider == sorted(["encoder.1.weight" if name == "vae-mlp" else "encoder.5.weight",
                            *decoder_layers]), wider
    out = m.train_step(mnist_batch(), m.configure_optimizers())
    assert all(math.isfinite(v) for v in out.values())
    assert seeded(m, 4, labels=2).shape == (4, 1, 28, 28)
    z = torch.randn(4, m.config.latent_dim)
    with torch.no_grad():  # the label reaches the decoder (and the encoder)
        assert not torch.allclose(m._run(m.decoder, z, torch.full((4,), 2)),
                                  m._run(m.decoder, z, torch.full((4,), 7)))
        x = mnist_batch(4).images.float() / 127.5 - 1
        assert not torch.allclose(m.encode(x, torch.full((4,), 2))[0],
                                  m.encode(x, torch.full((4,), 7))[0])
    assert torch.equal(seeded(m, 4), seeded(m, 4))  # random classes from the generator


def test_conditional_vae_kl_weight_falls_from_kl_start_to_one():
    """A conditional VAE weighs the KL term by KL_START at step 0, falling linearly to 1
    over kl_anneal_steps (keyed on the optimizer's step count); an unconditional one
    trains on the ELBO throughout unless kl_start is given."""
    from zoo.models.vae import KL_START

    m = build("vae-mlp", conditional=True, kl_anneal_steps=4)
    opt = m.configure_optimizers()
    weights = []
    for _ in range(6):
        weights.append(m.kl_weight(opt["vae"]))
        m.train_step(mnist_batch(8), opt)
    step = (KL_START - 1) / 4
    assert weights == pytest.approx([KL_START - i * step for i in range(5)] + [1.0])
    u = build("vae-mlp")
    assert u.kl_weight(u.configure_optimizers()["vae"]) == 1.0
    v = build("vae-mlp", kl_start=3.0)
    assert v.kl_weight(v.configure_optimizers()["vae"]) == 3.0


def test_unlabelled_conditional_sampling_draws_classes_from_the_generator():
    for name in ("gan-mlp", "vae-mlp"):
        m = build(name, conditional=True)
        a = seeded(m, 16)
        assert torch.equal(a, seeded(m, 16))
        b = m.sample(16, generator=torch.Generator().manual_seed(1))
        assert not torch.equal(a, b)


# -- the VAE's bounds -----------------------------------------------------------------------


def test_vae_conditional_and_marginal_nll():
    m = build("vae-mlp", conditional=True)
    m.train_step(mnist_batch(64), m.configure_optimizers())
    x = mnist_batch(4, seed=1).images
    d = m.dims * math.log(2)
    torch.manual_seed(0)
    per_class = torch.stack([m.nll(x, k=200, labels=c) for c in range(10)])  # [10, 4]
    torch.manual_seed(0)
    marginal = m.nll(x, k=200)
    # -log mean_y p(x|y) lies in [min_y -log p(x|y), min_y -log p(x|y) + log 10] (in nats);
    # the importance-sampled bounds are within a small Monte Carlo error of that
    lo = per_class.min(0).values
    assert (marginal >= lo - 0.002).all() and (marginal <= lo + math.log(10) / d + 0.002).all()
    exact = -(torch.logsumexp(-per_class.double() * d, 0) - math.log(10)) / d
    assert torch.allclose(marginal.double(), exact, atol=0.003)
    assert "marginal over 10 classes" in m.describe_nll(k=5)
    assert "p(x|y)" in m.describe_nll(k=5, labels=1)
    y = torch.tensor([1, 2, 3, 4])
    assert m.nll(x, k=3, labels=y).shape == (4,)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_label_errors(name):
    cond, plain = build(name, conditional=True), build(name)
    with pytest.raises(ConfigError, match="0..9"):
        cond.sample(2, labels=10)
    with pytest.raises(ConfigError, match="0..9"):
        cond.sample(2, labels=[-1, 3])
    with pytest.raises(ConfigError, match="one per image"):
        cond.sample(2, labels=[1, 2, 3])
    with pytest.raises(ConfigError, match="not class-conditional"):
        plain.sample(2, labels=1)
    batch = mnist_batch(4)
    with pytest.raises(ConfigError, match="class-conditional"):
        cond.train_step(Batch(batch.images, torch.full((4,), -1)), cond.configure_optimizers())
    with pytest.raises(ConfigError, match="num_classes"):
        zoo.create(name, image_shape=(1, 28, 28), conditional=True)
    if name.startswith("vae"):
        with pytest.raises(ConfigError, match="not class-conditional"):
            plain.nll(batch.images, k=1, labels=0)
        with pytest.raises(ConfigError, match="0..9"):
            cond.nll(batch.images, k=1, labels=12)
    else:
        with pytest.raises(ConfigError, match="guidance"):
            cond.sample(2, guidance=3.0)


# -- conditioning is real -------------------------------------------------------------------


def class_accuracy(model, n=500) -> float:
    """The share of n samples (classes 0..9 in turn) the shipped MNIST classifier reads as
    the class they were asked for; chance is 0.1."""
    from zoo.metrics.features import load_classifier

    clf, _ = load_classifier("mnist-classifier")
    labels = torch.arange(n) % 10
    s = model.sample(n, labels=labels, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (clf(s)[1].argmax(1) == labels).float().mean().item()


def train(model, steps, batch_size):
    x, y = zdata.load("mnist", "train")
    g = torch.Generator().manual_seed(0)
    opt = model.configure_optimizers()
    for _ in range(steps):
        idx = torch.randint(len(x), (batch_size,), generator=g)
        model.train_step(Batch(x[idx], y[idx]), opt)
    return model


@pytest.mark.slow
def test_conditional_vae_samples_the_asked_classes():
    """vae-mlp, 400 steps of 128 (lr 2e-3, ~11 s on one thread), the KL weight back at 1
    after 200: measured 0.91 class accuracy (chance 0.10); 0.25 on the plain ELBO, whose
    latent carries the class."""
    model = train(build("vae-mlp", conditional=True, lr=2e-3, kl_anneal_steps=200), 400, 128)
    acc = class_accuracy(model)
    assert acc > 0.7, acc


@pytest.mark.slow
def test_conditional_gan_samples_the_asked_classes():
    """gan-dcgan (channels 16, ns, the mode-seeking term at its default), 400 steps of 64
    (~21 s on one thread): measured 0.48 class accuracy (chance 0.10) and a within-class
    per-pixel standard deviation of 10.9 of 255; without the term 0.66 and about 3, one image
    per class (real digits: 19-44)."""
    model = train(build("gan-dcgan", conditional=True, channels=16), 400, 64)
    model.recalibrate_batchnorm(samples=512)
    acc = class_accuracy(model)
    assert acc > 0.35, acc
    labels = torch.arange(500) % 10
    s = model.sample(500, labels=labels, generator=torch.Generator().manual_seed(1)).float()
    spread = sum(s[labels == c].std(0).mean().item() for c in range(10)) / 10
    assert spread > 7, spread
