"""The diffusion family: schedules and posteriors against closed forms, the DDPM and DDIM
steps against reference formulas and diffusers' schedulers, the samplers' contracts, the
variational bound, and sample quality after a short training run on real MNIST."""

from __future__ import annotations

import math

import diffusers
import pytest
import torch
from helpers import nonzero

import zoo
import zoo.data
import zoo.train
from zoo.core import ConfigError
from zoo.images import save_grid
from zoo.models.diffusion import (
    DDPM,
    Ancestral,
    ddim_plan,
    make_betas,
    sampling_timesteps,
    timestep_proposal,
    vb_terms_nats,
)
from zoo.models.diffusion.sampler import affine_step

T = 1000


def tiny(timesteps: int = T, schedule: str = "linear", seed: int = 0, **kw) -> DDPM:
    """A small U-Net on 8x8 images whose output is not zero (unlike a fresh model's)."""
    torch.manual_seed(seed)
    m = zoo.create(
        "ddpm", image_shape=(1, 8, 8), timesteps=timesteps, schedule=schedule, channels=8,
        channel_mult=(1, 2), norm_groups=4, **kw,
    )
    nonzero(m)
    return m.eval()


# -- schedules ----------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_closed_forms(schedule):
    m = zoo.create("ddpm", image_shape=(1, 8, 8), schedule=schedule, channels=8, norm_groups=4)
    for name in ("betas", "alphas_cumprod", "posterior_variance", "posterior_mean_coef1"):
        assert getattr(m.schedule, name).dtype == torch.float64
    betas, ab = m.schedule.betas, m.schedule.alphas_cumprod
    if schedule == "linear":
        ref_betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
        assert torch.allclose(betas, torch.tensor(ref_betas, dtype=torch.float64), atol=1e-15)
        for t in (0, 1, 499, 998, 999):
            assert math.isclose(float(ab[t]), math.prod(1 - b for b in ref_betas[:t + 1]),
                                rel_tol=1e-11)
    else:
        def f(u: float) -> float:
            return math.cos((u / T + 0.008) / 1.008 * math.pi / 2) ** 2

        for t in (0, 1, 500, 990, 998):
            assert math.isclose(float(ab[t]), f(t + 1) / f(0), rel_tol=1e-9)
        assert float(betas.max()) == pytest.approx(0.999)  # clipped at the end
        assert math.isclose(float(ab[T - 1]), float(ab[T - 2]) * 0.001, rel_tol=1e-9)

    # the posterior q(x_{t-1} | x_t, x_0) by Gaussian conjugacy, independently of the code:
    # precision = 1/(1 - abar_{t-1}) + alpha_t / beta_t
    alpha = 1 - betas
    for t in (1, 2, 100, 500, 999):
        var = 1.0 / (1.0 / (1 - ab[t - 1]) + alpha[t] / betas[t])
        assert math.isclose(float(m.schedule.posterior_variance[t]), float(var), rel_tol=1e-9)
        c1 = var * ab[t - 1].sqrt() / (1 - ab[t - 1])
        c2 = var * alpha[t].sqrt() / betas[t]
        assert math.isclose(float(m.schedule.posterior_mean_coef1[t]), float(c1), rel_tol=1e-9)
        assert math.isclose(float(m.schedule.posterior_mean_coef2[t]), float(c2), rel_tol=1e-9)
    assert float(m.schedule.posterior_variance[0]) == 0.0
    assert float(m.schedule.posterior_mean_coef1[0]) == pytest.approx(1.0)
    assert float(m.schedule.posterior_mean_coef2[0]) == 0.0
    assert float(m.schedule.posterior_log_variance_clipped[0]) == pytest.approx(
        math.log(float(m.schedule.posterior_variance[1])))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_match_diffusers(schedule):
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=T, beta_schedule="linear" if schedule == "linear" else
        "squaredcos_cap_v2")
    ours = make_betas(schedule, T, 1e-4, 0.02)
    assert torch.allclose(ours.float(), sched.betas, atol=1e-6)


def test_q_sample_moments():
    m = tiny()
    g = torch.Generator().manual_seed(1)
    n = 20000
    x0 = torch.linspace(-1, 1, 64).view(1, 1, 8, 8).expand(n, 1, 8, 8)
    for t in (0, 10, 300, 999):
        tt = torch.full((n,), t)
        xt = m.schedule.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
        ab = float(m.schedule.alphas_cumprod[t])
        mean_err = (xt.mean(0) - math.sqrt(ab) * x0[0]).abs().max()
        assert mean_err < 5 * math.sqrt((1 - ab) / n)
        var = xt.var(0)
        assert ((var / (1 - ab)) - 1).abs().max() < 0.06  # 5 sd of a variance of 20000 draws


# -- one step of each sampler -------------------------------------------------------------


def _inputs(seed: int = 0, shape=(4, 1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g), torch.randn(shape, generator=g),
            torch.randn(shape, generator=g))


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_is_the_posterior(variance, clip):
    m = tiny()
    plan = Ancestral(variance=variance).plan(m.schedule)
    assert plan.t.tolist() == list(range(T - 1, -1, -1))
    x, eps, z = _inputs()
    for t in (999, 500, 20, 1, 0):
        i = T - 1 - t
        ab, ab_prev = float(m.schedule.alphas_cumprod[t]), float(m.schedule.alphas_cumprod_prev[t])
        beta = float(m.schedule.betas[t])
        x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean = (math.sqrt(ab_prev) * beta / (1 - ab) * x0
                + math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * x)
        var = (1 - ab_prev) / (1 - ab) * beta if variance == "beta_tilde" else beta
        ref = mean + (math.sqrt(var) * z if t > 0 else 0.0)
        out, _ = affine_step(plan, i, x, eps, z if plan.noisy[i] else None, clip)
        assert plan.noisy[i] == (t > 0)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_is_eq12(eta):
    """x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z (Song et al.)."""
    m = tiny()
    x, eps, z = _inputs(1)
    for t, prev in ((999, 979), (500, 250), (30, 0), (5, -1)):
        ab = float(m.schedule.alphas_cumprod[t])
        ab_prev = float(m.schedule.alphas_cumprod[prev]) if prev >= 0 else 1.0
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        ref = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev - sigma**2) * eps + sigma * z
        plan = ddim_plan(m.schedule, [t, prev] if prev >= 0 else [t], eta)
        out, x0_out = affine_step(plan, 0, x, eps, z, clip_x0=False)
        torch.testing.assert_close(x0_out, x0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("steps", [10, 50, 30])
def test_ddim_matches_diffusers(schedule, spacing, steps):
    """Same timesteps as diffusers' DDIMScheduler, and the same update from the same x, eps
    and noise (with clipping: diffusers re-derives eps from the clipped x0 when
    use_clipped_model_output=True, as zoo always does).

    To 1e-5 against diffusers' step evaluated in float64 on zoo's schedule. Against diffusers
    as shipped (float32 schedule and arithmetic) to 1e-4: its float32 keeps fewer digits
    where the step is ill-conditioned (1 / sqrt(1 - abar) = 23 at t=20 of the cosine
    schedule; at t=999 abar = 2e-9, x0 = x / sqrt(abar) and sqrt(1 - abar_prev - sigma^2)
    cancels, so that one step is compared in float64 only).
    """
    m = tiny(schedule=schedule)
    ts = sampling_timesteps(T, steps, spacing)
    x, eps, z = _inputs(steps)
    for clip in (False, True):
        for eta in (0.0, 1.0):
            scheds = [diffusers.DDIMScheduler(
                num_train_timesteps=T, clip_sample=clip, set_alpha_to_one=True, steps_offset=0,
                beta_schedule="linear" if schedule == "linear" else "squaredcos_cap_v2",
                timestep_spacing=spacing,
            ) for _ in range(2)]
            scheds[1].alphas_cumprod = m.schedule.alphas_cumprod.clone()
            scheds[1].final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
            for sched in scheds:
                sched.set_timesteps(steps)
                assert sched.timesteps.tolist() == ts
            full = ddim_plan(m.schedule, ts, eta)
            for i, t in enumerate(ts):
                # diffusers steps from t to t - T // S whatever the spacing; zoo's plan steps
                # to the next timestep it visits. They agree where T // S is that gap.
                prev = t - T // steps
                plan = ddim_plan(m.schedule, [t, prev] if prev >= 0 else [t], eta)
                out, _ = affine_step(plan, 0, x, eps, z if eta > 0 else None, clip)
                for sched, dt, tol in zip(scheds, (torch.float32, torch.float64), (1e-4, 1e-5),
                                          strict=True):
                    if dt == torch.float32 and schedule == "cosine" and t == T - 1:
                        continue
                    ref = sched.step(
                        eps.to(dt), t, x.to(dt), eta=eta, use_clipped_model_output=True,
                        variance_noise=z.to(dt) if eta > 0 else None,
                    ).prev_sample
                    torch.testing.assert_close(out, ref.float(), atol=tol, rtol=tol)
                if (ts[i + 1] if i + 1 < len(ts) else -1) == max(prev, -1):
                    noise = z if full.noisy[i] else None
                    out_full, _ = affine_step(full, i, x, eps, noise, clip)
                    torch.testing.assert_close(out_full, out, atol=0, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_matches_diffusers(schedule, variance):
    """The ancestral step equals DDPMScheduler's (fixed_small = beta-tilde, fixed_large =
    beta) from the same x, eps and noise: to 1e-5 in float64 on zoo's schedule; to 1e-3 as
    shipped in float32, whose 1 - abar keeps 3 digits at the cosine schedule's first steps
    (1 - abar_1 = 3e-5) and none at its last (see test_ddim_matches_diffusers)."""
    m = tiny(schedule=schedule)
    x, eps, _ = _inputs(7)
    for clip in (False, True):
        scheds = [diffusers.DDPMScheduler(
            num_train_timesteps=T, clip_sample=clip,
            beta_schedule="linear" if schedule == "linear" else "squaredcos_cap_v2",
            variance_type="fixed_small" if variance == "beta_tilde" else "fixed_large",
        ) for _ in range(2)]
        scheds[1].alphas_cumprod = m.schedule.alphas_cumprod.clone()
        scheds[1].one = torch.tensor(1.0, dtype=torch.float64)
        plan = Ancestral(variance=variance).plan(m.schedule)
        for t in (999, 700, 100, 3, 1, 0):
            i = T - 1 - t
            for sched, dt, tol in zip(scheds, (torch.float32, torch.float64), (1e-3, 1e-5),
                                      strict=True):
                if dt == torch.float32 and schedule == "cosine" and t == T - 1:
                    continue
                # diffusers draws its noise from the generator in its dtype
                z = torch.randn(x.shape, generator=torch.Generator().manual_seed(t), dtype=dt)
                out, _ = affine_step(plan, i, x, eps, z.float() if plan.noisy[i] else None, clip)
                ref = sched.step(eps.to(dt), t, x.to(dt),
                                 generator=torch.Generator().manual_seed(t)).prev_sample
                torch.testing.assert_close(out, ref.float(), atol=tol, rtol=tol)


# -- samplers -------------------------------------------------------------------------------


def test_sampling_timesteps():
    assert sampling_timesteps(1000, 10, "trailing") == list(range(999, 0, -100))
    assert sampling_timesteps(1000, 10, "leading") == list(range(900, -1, -100))
    assert sampling_timesteps(1000, 4, "linspace") == [999, 666, 333, 0]
    for spacing in ("trailing", "leading", "linspace"):
        assert sampling_timesteps(100, 100, spacing) == list(range(99, -1, -1))


def test_ddim_eta0_is_deterministic_given_the_noise():
    m = tiny()
    g = torch.Generator().manual_seed(3)
    a = m.sample_unit(3, generator=g, sampler="ddim", steps=20, eta=0.0)
    # eta=0 draws x_T and nothing else: the generator moved by exactly one x_T draw
    after = torch.rand(1, generator=g)
    g2 = torch.Generator().manual_seed(3)
    torch.randn((3, 1, 8, 8), generator=g2)
    assert torch.equal(after, torch.rand(1, generator=g2))
    b = m.sample_unit(3, generator=torch.Generator().manual_seed(3), sampler="ddim", steps=20)
    assert torch.equal(a, b)
    c = m.sample_unit(3, generator=torch.Generator().manual_seed(4), sampler="ddim", steps=20)
    assert not torch.equal(a, c)
    noisy = m.sample_unit(3, generator=torch.Generator().manual_seed(3), sampler="ddim",
                          steps=20, eta=1.0)
    assert not torch.allclose(a, noisy)
    u8 = m.sample(3, generator=torch.Generator().manual_seed(3), sampler="ddim", steps=20)
    assert u8.dtype == torch.uint8 and u8.shape == (3, 1, 8, 8)
    assert torch.equal(u8, ((a.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))


@pytest.mark.parametrize("clip", [True, False])
def test_ddim_eta1_all_steps_is_ancestral_sampling(clip):
    """Same noise stream, same trajectory: DDIM with eta=1 over all T steps is DDPM."""
    m = tiny(timesteps=50, seed=5)
    ddpm = m.sample_unit(4, generator=torch.Generator().manual_seed(0), sampler="ddpm",
                         clip_x0=clip)
    for spacing in ("trailing", "leading", "linspace"):
        ddim = m.sample_unit(4, generator=torch.Generator().manual_seed(0), sampler="ddim",
                             steps=50, eta=1.0, spacing=spacing, clip_x0=clip)
        torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=0)
    assert ddpm.std() > 0.1


def test_ddim_with_a_tenth_of_the_steps_makes_a_tenth_of_the_calls():
    m = tiny(timesteps=300)
    calls = []
    m.net.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    m.sample(1, sampler="ddpm")
    assert len(calls) == 300
    calls.clear()
    m.sample(1, sampler="ddim", steps=30)
    assert len(calls) == 30
    calls.clear()
    m.sample(5, sampler="ddim", steps=7, batch_size=2)
    assert calls == [2] * 7 + [2] * 7 + [1] * 7


def test_sampler_options_are_checked():
    m = tiny(timesteps=100)
    with pytest.raises(ConfigError, match="ddpm, ddim"):
        m.sample(1, sampler="euler")
    for steps in (0, 101, -3):
        with pytest.raises(ConfigError, match=r"1\.\.100"):
            m.sample(1, sampler="ddim", steps=steps)
    with pytest.raises(ConfigError, match="eta must be >= 0"):
        m.sample(1, sampler="ddim", eta=-0.1)
    with pytest.raises(ConfigError, match="trailing, leading, linspace"):
        m.sample(1, sampler="ddim", spacing="uniform")
    with pytest.raises(ConfigError, match="beta_tilde, beta"):
        m.sample(1, sampler="ddpm", variance="learned")
    with pytest.raises(ConfigError, match="valid: sampler, .*steps.*eta"):
        m.sample(1, temperature=0.5)
    with pytest.raises(ConfigError, match="option of sampler='ddim'"):
        m.sample(1, sampler="ddpm", eta=0.5)
    with pytest.raises(ConfigError, match="steps must be an integer"):
        m.sample(1, sampler="ddim", steps="many")
    # values parsed from the command line arrive as strings or typed values
    out = m.sample(2, sampler="ddim", steps="5", eta="0.5", clip_x0="false")
    assert out.shape == (2, 1, 8, 8)
    assert m.sample(0, sampler="ddim", steps=3).shape == (0, 1, 8, 8)


def test_image_sizes():
    for shape in ((1, 28, 28), (3, 32, 32), (1, 64, 48)):
        m = zoo.create("ddpm", image_shape=shape)
        x = torch.randn(2, *shape)
        assert m.net(x, torch.tensor([3, 999])).shape == x.shape
    with pytest.raises(ConfigError, match="multiples of 4"):
        zoo.create("ddpm", image_shape=(1, 30, 30), channel_mult=(1, 2, 2))
    # without channel_mult the depth follows the size
    for shape, mult in (((1, 30, 30), (1, 2)), ((1, 8, 8), (1, 2)), ((1, 28, 28), (1, 2, 2)),
                        ((3, 64, 64), (1, 2, 2)), ((1, 7, 7), (1,))):
        assert zoo.create("ddpm", image_shape=shape).config.channel_mult == mult
    assert zoo.create("ddpm-full", image_shape=(3, 32, 32)).config.channel_mult == (1, 2, 2, 2)
    assert zoo.create("ddpm-full", image_shape=(1, 28, 28)).config.channel_mult == (1, 2, 2)
    with pytest.raises(ConfigError, match="multiples of 8"):
        zoo.create("ddpm", image_shape=(1, 28, 28), channel_mult=(1, 2, 2, 2))
    assert zoo.create("ddpm", dataset="mnist").num_parameters() == 1_062_497
    assert zoo.create("ddpm-full", dataset="cifar10").num_parameters() == 35_746_307


def test_save_load_roundtrip(tmp_path):
    m = tiny(timesteps=50, schedule="cosine")
    m.save(tmp_path / "m.pt")
    back = DDPM.load(tmp_path / "m.pt")
    assert torch.equal(back.schedule.alphas_cumprod, m.schedule.alphas_cumprod)
    kw = {"sampler": "ddim", "steps": 10, "eta": 0.3}
    assert torch.equal(back.sample(2, generator=torch.Generator().manual_seed(1), **kw),
                       m.sample(2, generator=torch.Generator().manual_seed(1), **kw))


def test_the_config_is_flat_with_the_unet_fields_declared_once():
    import json
    from dataclasses import fields
    from pathlib import Path

    from zoo.core import config_from_dict, config_to_dict
    from zoo.models.diffusion import DDPMConfig
    from zoo.nn.unet import UNetConfig

    run = Path(__file__).resolve().parents[1] / "reports/latent-fashion-cpu/ddpm/run.json"
    old = json.loads(run.read_text())["model_config"]  # a run.json written before the change
    c = config_from_dict(DDPMConfig, old)
    assert config_to_dict(c) == old  # the same flat keys, in the same order
    assert list(config_to_dict(c)) == list(old)
    assert c.unet == UNetConfig(channels=32, channel_mult=(1, 2, 2))
    unet = {f.name for f in fields(UNetConfig)}
    assert unet <= {f.name for f in fields(DDPMConfig)}
    assert not unet & set(DDPMConfig.__annotations__)  # inherited, not declared again
    m = zoo.create("ddpm", image_shape=(1, 8, 8), channels="8", timesteps="20")  # as --set
    assert m.net.config == m.config.unet and m.config.channels == 8


# -- the variational bound ------------------------------------------------------------------


def test_prior_term_is_near_zero_for_the_linear_schedule():
    m = tiny()
    x0 = torch.linspace(-1, 1, 64).view(1, 1, 8, 8).repeat(3, 1, 1, 1)
    prior_bpd = m.schedule.prior_nats(x0) / (64 * math.log(2))
    ab = float(m.schedule.alphas_cumprod[-1])
    closed = 0.5 * (ab * x0[0].double().square() + (1 - ab) - 1 - math.log(1 - ab)).sum()
    assert prior_bpd.max() < 1e-4
    torch.testing.assert_close(m.schedule.prior_nats(x0), closed.expand(3), rtol=1e-5, atol=1e-9)


def test_kl_terms_vanish_for_a_perfect_denoiser():
    m = tiny()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([1, 10, 500, 999])
    m.net.forward = lambda xt, tt: noise
    kl = vb_terms_nats(m.net, m.schedule, x0, t, noise, clip_x0=False, part="kl")
    assert kl.abs().max() < 1e-4
    # a wrong eps: the KL of two Gaussians of equal variance, 0.5 |mean difference|^2 / var,
    # where the means differ by coef1 (x0 - x0_pred)
    wrong_eps = noise.flip(0)
    m.net.forward = lambda xt, tt: wrong_eps
    wrong = vb_terms_nats(m.net, m.schedule, x0, t, noise, clip_x0=False, part="kl")
    ab = m.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    x0_err = (1 - ab).sqrt() / ab.sqrt() * (wrong_eps - noise)
    c1 = m.schedule.posterior_mean_coef1[t].view(-1, 1, 1, 1)
    ref = 0.5 * (c1 * x0_err).square().flatten(1).sum(1) / m.schedule.posterior_variance[t]
    torch.testing.assert_close(wrong, ref, rtol=1e-4, atol=1e-6)


def test_nll_options_are_checked():
    m = tiny(timesteps=10)
    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="estimate, all"):
        m.nll(x, mode="importance")
    with pytest.raises(ConfigError, match="K must be >= 2"):
        m.nll(x, mode="estimate", K=1)
    with pytest.raises(ConfigError, match="importance, uniform"):
        m.nll(x, proposal="stratified")
    with pytest.raises(ConfigError, match="valid: mode, K, proposal, draws"):
        m.nll(x, samples=3)
    with pytest.raises(ConfigError, match="draws must be >= 2"):
        m.nll(x, mode="all", draws=1)
    r = m.nll_with_stderr(x, mode="all", draws="3")
    assert r.kind == "all" and (r.stderr > 0).all() and r.bpd.shape == (2,)
    assert r.detail == "all 10 terms, x_t sampled, 3 draws each"
    for proposal in ("importance", "uniform"):
        r = m.nll_with_stderr(x, mode="estimate", K="3", proposal=proposal)
        assert r.kind == "estimate" and (r.stderr > 0).all() and torch.isfinite(r.bpd).all()


def test_exact_is_a_deprecated_alias_of_all():
    """mode="exact" was never exact: it is "all", with a standard error > 0."""
    m = tiny(timesteps=10)
    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    with pytest.warns(DeprecationWarning, match="'exact' is deprecated"):
        old = m.nll_with_stderr(x, mode="exact", generator=torch.Generator().manual_seed(0))
    new = m.nll_with_stderr(x, mode="all", generator=torch.Generator().manual_seed(0))
    assert old.kind == new.kind == "all" and (old.stderr > 0).all()
    torch.testing.assert_close(old.bpd, new.bpd, rtol=0, atol=0)
    assert m.describe_nll(mode="exact") == "bound, all 10 terms, x_t sampled, 2 draws each"
    with pytest.warns(DeprecationWarning):
        configured = tiny(timesteps=10, nll_mode="exact")  # saved configs and suites
    assert configured.config.nll_mode == "all"
    assert configured.describe_nll(draws=4) == "bound, all 10 terms, x_t sampled, 4 draws each"
    with pytest.raises(ConfigError, match="nll_draws must be >= 2"):
        tiny(timesteps=10, nll_draws=1)


@pytest.mark.slow
def test_all_terms_stderr_matches_the_spread_over_seeds():
    """The all-terms sum is a Monte Carlo estimate: over generator seeds on the same images its
    spread matches the standard error it reports (from the per-term variances over draws),
    and its mean agrees with the importance-sampled estimate."""
    m = tiny(timesteps=20)
    x = torch.randint(0, 256, (3, 1, 8, 8), generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    runs = [m.nll_with_stderr(x, mode="all", generator=torch.Generator().manual_seed(s))
            for s in range(100)]
    bpd = torch.stack([r.bpd for r in runs]).double()
    se = torch.stack([r.stderr for r in runs]).double()
    assert (se > 0).all()
    ratio = bpd.std(0) / se.square().mean(0).sqrt()
    # measured: ratio 0.98, 1.19, 0.94 (30 seeds: 1.07, 1.38, 0.90); spread ~1.1 bits/dim
    assert ((ratio > 1 / 1.5) & (ratio < 1.5)).all(), ratio
    est = m.nll_with_stderr(x, mode="estimate", K=200, generator=torch.Generator().manual_seed(99))
    mean_all = float(bpd.mean())
    se_all = float(se.square().mean().sqrt()) / math.sqrt(bpd.numel())
    # measured: all 16.89 +- 0.06, estimate 17.07 +- 0.71 bits/dim
    assert abs(mean_all - est.mean()) < 3 * math.hypot(se_all, est.stderr_of_mean())


def test_timestep_proposal():
    m = tiny()
    q = timestep_proposal(m.schedule)
    assert q.shape == (T - 1,) and math.isclose(float(q.sum()), 1.0, rel_tol=1e-12)
    harmonic = sum(1 / t for t in range(1, T))
    assert math.isclose(float(q[0]), 0.5 / (T - 1) + 0.5 / harmonic, rel_tol=1e-12)
    assert float(q.min()) >= 0.5 / (T - 1)


# -- trained on real MNIST ------------------------------------------------------------------

#: the ci suite's DDPM (16 channels: a quarter of the default's FLOPs per image), ~0.17
#: CPU-s per step on one thread
TRAIN_CONFIG = {"channels": 16}
TRAIN_STEPS = 450
TRAIN_BATCH = 32


@pytest.fixture(scope="module")
def mnist_test():
    images, _ = zoo.data.load("mnist", "test")
    return images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The ci suite's MNIST model after a short run of the Trainer (EMA decay lowered to
    0.99: the default 0.999 averages over more steps than this run has)."""
    out = tmp_path_factory.mktemp("ddpm-run")
    model = zoo.create("ddpm", dataset="mnist", **TRAIN_CONFIG)
    zoo.train.Trainer(
        model, "mnist", out=out, steps=TRAIN_STEPS, batch_size=TRAIN_BATCH, ema_decay=0.99,
        progress=False,
    ).fit()
    return zoo.train.load_run(out)


@pytest.mark.slow
def test_nll_estimate_agrees_with_all_terms(trained, mnist_test):
    x = mnist_test[:2]
    every = trained.nll_with_stderr(x, mode="all", generator=torch.Generator().manual_seed(0))
    est = trained.nll_with_stderr(x, mode="estimate", K=64,
                                  generator=torch.Generator().manual_seed(1))
    assert every.kind == "all" and est.kind == "estimate"
    se = est.stderr_of_mean()
    # measured: all terms 2.477 +- 0.035 (2 draws each), estimate 2.494 +- 0.139 bits/dim
    assert 0 < every.stderr_of_mean() < se < 0.3
    assert abs(est.mean() - every.mean()) < 3 * math.hypot(se, every.stderr_of_mean())


@pytest.mark.slow
def test_nll_untrained_near_8_trained_far_below(trained, mnist_test):
    x = mnist_test[:16]
    untrained = zoo.create("ddpm", dataset="mnist", **TRAIN_CONFIG)
    gen = torch.Generator().manual_seed(0)
    before = untrained.nll_with_stderr(x, K=8, generator=gen)
    after = trained.nll_with_stderr(x, K=8, generator=gen)
    # measured: untrained 16.15 +- 0.33, trained 2.26 +- 0.13 bits/dim (uniform noise is 8)
    assert before.mean() > 8.0
    assert after.mean() < 4.0
    assert after.mean() + 3 * after.stderr_of_mean() < before.mean() - 3 * before.stderr_of_mean()


@pytest.mark.slow
def test_trained_samples_look_like_mnist(trained, tmp_path):
    """FID with the project's MNIST classifier, DDIM-10, 500 samples vs the test split."""
    from zoo import metrics

    gen = torch.Generator().manual_seed(0)
    samples = trained.sample(500, sampler="ddim", steps=10, generator=gen)
    save_grid(samples[:64], tmp_path / "ddim10.png", scale=3)
    torch.manual_seed(0)
    untrained = zoo.create("ddpm", dataset="mnist", **TRAIN_CONFIG)
    base = untrained.sample(500, sampler="ddim", steps=10,
                            generator=torch.Generator().manual_seed(0))
    fid = {name: metrics.fid(s, "mnist", extractor="mnist-classifier")
           for name, s in (("trained", samples), ("untrained", base))}
    # measured: trained 43.2 (58.7 after 300 steps, 79.5 after 200), untrained 566; 200 s
    # of GPU training of the default model reach 0.96 at n=10000 (docs/models.md)
    assert fid["untrained"] > 300 and fid["trained"] < 60, fid


def test_cuda_graph_option_is_checked():
    m = tiny(timesteps=10)
    with pytest.raises(ConfigError, match="CUDA"):
        m.sample(1, sampler="ddim", steps=2, cuda_graph=True)
    with pytest.raises(ConfigError, match="true or false"):
        m.sample(1, sampler="ddim", steps=2, cuda_graph="maybe")
    a = m.sample(2, sampler="ddim", steps=2, cuda_graph="false",
                 generator=torch.Generator().manual_seed(0))
    b = m.sample(2, sampler="ddim", steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)  # "auto" is eager on the CPU
