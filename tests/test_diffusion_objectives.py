"""Training objectives of the diffusion family (v- and x0-prediction, min-SNR weighting) and
``sample(noise=x_T)``: the conversions and weights against closed forms, every sampler and
the bound with each prediction type, old checkpoints as epsilon models, and the given
noise's determinism across batch splits and the captured loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import capture_on_cpu, gen, nonzero_ddpm

import zoo
from zoo.core import ConfigError
from zoo.models.diffusion import DDPM
from zoo.models.diffusion.objectives import from_eps, loss_weight, target, to_eps, to_x0

OLD = Path(__file__).parent / "data" / "ddpm-unconditional-2bb93dd"
TINY = {"timesteps": 20, "channels": 8, "channel_mult": (1, 2), "norm_groups": 4}
SAMPLERS = [{"sampler": "ddpm"}, {"sampler": "ddim", "steps": 5},
            {"sampler": "ddim", "steps": 4, "eta": 1.0, "clip_x0": False}]
# the diffusers ports (checked against diffusers in test_diffusion_samplers.py)
PORTS = [{"sampler": "dpmpp-2m", "steps": 4}, {"sampler": "unipc", "steps": 4},
         {"sampler": "heun", "steps": 3}, {"sampler": "euler-ancestral", "steps": 4}]


def tiny(seed: int = 0, **kw) -> DDPM:
    """A U-Net on 8x8 images whose output is not zero (unlike a fresh model's)."""
    return nonzero_ddpm({**TINY, **kw}, seed)


# -- conversions and weights against closed forms --------------------------------------------


def _draw(seed: int, n: int = 6):
    g = gen(seed)
    x0 = torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)
    abar = torch.rand(n, generator=g, dtype=torch.float64) * 0.998 + 0.001
    a, s = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
    return x0, eps, abar, a, s, a * x0 + s * eps


@pytest.mark.parametrize("seed", range(3))
def test_targets_and_conversions_are_the_closed_forms(seed):
    x0, eps, abar, a, s, xt = _draw(seed)
    v = a * eps - s * x0  # Salimans & Ho 2022, appendix D
    assert torch.equal(target("epsilon", x0, eps, abar), eps)
    assert torch.equal(target("x0", x0, eps, abar), x0)
    torch.testing.assert_close(target("v", x0, eps, abar), v, rtol=0, atol=1e-12)
    for prediction, out in (("epsilon", eps), ("x0", x0), ("v", v)):
        # each output stands for the same eps and x0, and back
        torch.testing.assert_close(to_eps(prediction, out, xt, abar), eps, rtol=0, atol=1e-9)
        torch.testing.assert_close(to_x0(prediction, out, xt, abar), x0, rtol=0, atol=1e-9)
        torch.testing.assert_close(from_eps(prediction, eps, xt, abar), out, rtol=0,
                                   atol=1e-9)
        other = torch.randn(xt.shape, generator=gen(seed + 10), dtype=torch.float64)
        torch.testing.assert_close(from_eps(prediction, to_eps(prediction, other, xt, abar),
                                            xt, abar), other, rtol=0, atol=1e-9)
    # one abar for the whole batch (a sampling step) broadcasts
    one = abar[:1]
    x1 = one.sqrt() * x0 + (1 - one).sqrt() * eps
    torch.testing.assert_close(to_eps("v", target("v", x0, eps, one), x1, one), eps,
                               rtol=0, atol=1e-9)


def test_min_snr_weights_are_the_closed_forms():
    abar = torch.tensor([1e-6, 0.05, 5 / 6, 0.9, 0.999], dtype=torch.float64)
    for gamma in (1.0, 5.0):
        for i, ab in enumerate(abar.tolist()):
            snr = ab / (1 - ab)
            want = {"epsilon": min(snr, gamma) / snr, "v": min(snr, gamma) / (snr + 1),
                    "x0": min(snr, gamma)}
            for prediction, w in want.items():
                got = float(loss_weight(prediction, "min-snr", abar, gamma)[i])
                assert math.isclose(got, w, rel_tol=1e-12), (prediction, ab, gamma)
                assert float(loss_weight(prediction, "uniform", abar, gamma)[i]) == 1.0
    # every weighting is the x0-space error weighted by min(SNR, gamma): eps-space error is
    # SNR x the x0 error, v-space (SNR + 1) x
    snr = abar / (1 - abar)
    x0w = loss_weight("x0", "min-snr", abar, 5.0)
    torch.testing.assert_close(loss_weight("epsilon", "min-snr", abar, 5.0) * snr, x0w)
    torch.testing.assert_close(loss_weight("v", "min-snr", abar, 5.0) * (snr + 1), x0w)


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
@pytest.mark.parametrize("weighting", ["uniform", "min-snr"])
def test_the_training_loss_is_the_weighted_error_of_the_target(prediction, weighting):
    m = tiny(prediction=prediction, loss_weighting=weighting, min_snr_gamma=2.0).train()
    x = torch.randint(0, 256, (4, 1, 8, 8), generator=gen(1), dtype=torch.uint8)
    t = torch.tensor([0, 3, 11, 19])
    noise = torch.randn(4, 1, 8, 8, generator=gen(2))
    m.batch_randint = lambda high, n: t
    m.batch_randn = lambda *shape: noise
    seen = []

    class Stop(Exception):
        pass

    def optimize(loss, opt):
        seen.append(loss.detach())
        raise Stop

    m.optimize = optimize
    with torch.no_grad():
        x0 = x.float() / 127.5 - 1
        abar = m.schedule.alphas_cumprod[t]
        a, s = abar.sqrt().float().view(-1, 1, 1, 1), (1 - abar).sqrt().float().view(-1, 1, 1, 1)
        out = m.net(a * x0 + s * noise, t)
    goal = {"epsilon": noise, "x0": x0, "v": a * noise - s * x0}[prediction]
    snr = (abar / (1 - abar)).float()
    w = torch.ones(4) if weighting == "uniform" else {
        "epsilon": snr.clamp(max=2.0) / snr, "v": snr.clamp(max=2.0) / (snr + 1),
        "x0": snr.clamp(max=2.0)}[prediction]
    with pytest.raises(Stop):
        m.train_step(x, m.configure_optimizers())
    want = ((out - goal).square().mean((1, 2, 3)) * w).mean()
    torch.testing.assert_close(seen[0], want, rtol=1e-5, atol=1e-6)


# -- sampling and the bound with each prediction type ---------------------------------------


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_every_sampler_sees_the_eps_the_output_stands_for(prediction):
    """A v- or x0-model samples exactly what an epsilon-model whose output is the converted
    one samples (the one conversion in ``_eps``), and its bound is finite."""
    m = tiny(prediction=prediction)
    ref = tiny()
    for options in SAMPLERS + PORTS:
        a = m.sample_unit(3, generator=gen(4), **options)
        assert torch.isfinite(a).all() and a.std() > 0.01

    class EpsNet(torch.nn.Module):
        def __init__(self, net, abar):
            super().__init__()
            self.net, self.abar = net, abar

        def forward(self, x, t, *y):
            return to_eps(prediction, self.net(x, t, *y).float(), x, self.abar[t])

    ref.net = EpsNet(m.net, m.schedule.alphas_cumprod)
    for options in SAMPLERS:
        torch.testing.assert_close(m.sample_unit(3, generator=gen(5), **options),
                                   ref.sample_unit(3, generator=gen(5), **options),
                                   rtol=0, atol=1e-5)
    x = torch.randint(0, 256, (3, 1, 8, 8), generator=gen(6), dtype=torch.uint8)
    for mode in ("estimate", "all"):
        bpd = m.nll(x, mode=mode, generator=gen(7))
        torch.testing.assert_close(bpd, ref.nll(x, mode=mode, generator=gen(7)),
                                   rtol=1e-5, atol=1e-5)
        assert torch.isfinite(bpd).all() and (bpd > 0).all()
    assert torch.isfinite(m.nll(x, clip_x0=True, generator=gen(8))).all()


def test_a_v_model_trains_and_samples_after_a_save_and_load(tmp_path):
    m = tiny(prediction="v", loss_weighting="min-snr").train()
    opts = m.configure_optimizers()
    x = torch.randint(0, 256, (8, 1, 8, 8), generator=gen(1), dtype=torch.uint8)
    losses = [m.train_step(x, opts)["loss"] for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    m.save(tmp_path / "v.pt")
    back = zoo.load(tmp_path / "v.pt")
    assert back.config.prediction == "v" and back.config.loss_weighting == "min-snr"
    assert back.config.min_snr_gamma == 5.0
    kw = {"sampler": "ddim", "steps": 4}
    assert torch.equal(back.sample(2, generator=gen(2), **kw),
                       m.eval().sample(2, generator=gen(2), **kw))


def test_an_old_checkpoint_loads_as_an_epsilon_model(tmp_path):
    """The shipped checkpoint (commit 2bb93dd) and one whose config lacks the new keys
    load as epsilon models with uniform weighting and sample as before."""
    old = zoo.load(OLD / "model.pt")
    assert "prediction" not in json.loads(
        torch.load(OLD / "model.pt", weights_only=True)["config"])
    assert old.config.prediction == "epsilon" and old.config.loss_weighting == "uniform"
    expected = torch.load(OLD / "expected.pt", weights_only=True)
    assert torch.equal(old.sample(4, sampler="ddpm", generator=gen(0)), expected["ddpm"])

    m = tiny()
    ckpt = m.checkpoint_dict()
    config = json.loads(ckpt["config"])
    for key in ("prediction", "loss_weighting", "min_snr_gamma"):
        del config[key]
    ckpt["config"] = json.dumps(config)
    torch.save(ckpt, tmp_path / "old.pt")
    back = zoo.load(tmp_path / "old.pt")
    assert back.config.prediction == "epsilon" and back.config.loss_weighting == "uniform"
    kw = {"sampler": "ddim", "steps": 4}
    assert torch.equal(back.sample(2, generator=gen(2), **kw), m.sample(2, generator=gen(2), **kw))


def test_bad_objective_options_are_one_line_errors():
    for kw, match in (({"prediction": "sample"}, "unknown prediction 'sample'; valid: "
                       "epsilon, v, x0"),
                      ({"loss_weighting": "snr"}, "unknown loss_weighting 'snr'; valid: "
                       "uniform, min-snr"),
                      ({"min_snr_gamma": 0.0}, "min_snr_gamma must be > 0"),
                      ({"min_snr_gamma": float("nan")}, "min_snr_gamma must be > 0")):
        with pytest.raises(ConfigError, match=match) as e:
            tiny(**kw)
        assert "\n" not in str(e.value)
    # as --set strings through the registry
    m = zoo.create("ddpm", image_shape=(1, 8, 8), channels=8, norm_groups=4,
                   prediction="v", loss_weighting="min-snr", min_snr_gamma="3")
    assert (m.config.prediction, m.config.loss_weighting, m.config.min_snr_gamma) == \
        ("v", "min-snr", 3.0)


# -- sample(noise=x_T) ----------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_given_noise_is_deterministic_across_calls_and_batch_splits(prediction):
    m = tiny(prediction=prediction)
    x_T = torch.randn(5, 1, 8, 8, generator=gen(9))
    kw = {"sampler": "ddim", "steps": 5, "eta": 0.0}
    a = m.sample_unit(5, noise=x_T, generator=gen(1), **kw)
    b = m.sample_unit(5, noise=x_T, generator=gen(2), **kw)  # the generator plays no part
    c = m.sample_unit(5, noise=x_T, **kw)
    assert torch.equal(a, b) and torch.equal(a, c)
    for batch_size in (1, 2, 3):
        u8 = m.sample(5, noise=x_T, batch_size=batch_size, **kw)
        assert torch.equal(u8, m.sample(5, noise=x_T, **kw)), batch_size
    # the same noise a generator would draw gives what that generator gives
    drawn = torch.randn((5, 1, 8, 8), generator=gen(3))
    assert torch.equal(m.sample_unit(5, noise=drawn, **kw),
                       m.sample_unit(5, generator=gen(3), **kw))
    # each image's noise is its own: a slice of the noise gives the slice of the images
    assert torch.equal(m.sample(2, noise=x_T[3:], **kw), m.sample(5, noise=x_T, **kw)[3:])
    # the noise given is not written to
    assert torch.equal(x_T, torch.randn(5, 1, 8, 8, generator=gen(9)))


def test_given_noise_with_a_stochastic_sampler_draws_only_the_step_noise():
    m = tiny()
    x_T = torch.randn(2, 1, 8, 8, generator=gen(9))
    for options in SAMPLERS:
        a = m.sample_unit(2, noise=x_T, generator=gen(1), **options)
        assert torch.equal(a, m.sample_unit(2, noise=x_T, generator=gen(1), **options))
    stochastic = {"sampler": "ddim", "steps": 4, "eta": 1.0}
    assert not torch.equal(m.sample_unit(2, noise=x_T, generator=gen(1), **stochastic),
                           m.sample_unit(2, noise=x_T, generator=gen(2), **stochastic))


@pytest.mark.parametrize("options", SAMPLERS[1:] + [{"sampler": "ddpm"}])
def test_given_noise_is_an_input_of_the_captured_loop(options, monkeypatch):
    import zoo.models.diffusion.loop as module

    monkeypatch.setattr(module, "capture", capture_on_cpu)
    monkeypatch.setattr(module, "graph_mode", lambda value, device: (value is True, False))
    m = tiny(prediction="v")
    for seed in (1, 2):
        x_T = torch.randn(3, 1, 8, 8, generator=gen(10 + seed))
        graphed = m.sample(3, noise=x_T, generator=gen(seed), batch_size=3, cuda_graph=True,
                           **options)
        eager = m.sample(3, noise=x_T, generator=gen(seed), batch_size=3, cuda_graph=False,
                         **options)
        assert torch.equal(graphed, eager)
    assert len(m._loop_graphs.graphs) == 1  # the second noise replayed the same graph


def test_bad_noise_is_a_one_line_error():
    m = tiny()
    for noise, match in ((torch.randn(2, 1, 8, 8), r"shape \[3, 1, 8, 8\].*got \[2, 1, 8, 8\]"),
                         (torch.randn(3, 8, 8), r"shape \[3, 1, 8, 8\]"),
                         (torch.randn(3, 3, 8, 8), r"shape \[3, 1, 8, 8\]"),
                         (torch.zeros(3, 1, 8, 8, dtype=torch.uint8), "float tensor"),
                         ([[0.0]], "float tensor.*got list"),
                         (torch.full((3, 1, 8, 8), float("nan")), "finite")):
        with pytest.raises(ConfigError, match=match) as e:
            m.sample(3, noise=noise, sampler="ddim", steps=2)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="valid: .*noise"):
        m.sample(1, nosie=torch.randn(1, 1, 8, 8))
