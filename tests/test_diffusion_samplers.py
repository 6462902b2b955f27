"""The diffusers-matched samplers (dpmpp-2m, heun, euler-ancestral, unipc): step for step
against diffusers' schedulers of the same name from the same network outputs and noise,
for both noise schedules and every prediction type, and end to end through DDPM.sample."""

from __future__ import annotations

import math

import diffusers
import pytest
import torch
from helpers import nonzero

import zoo
from zoo.core import ConfigError
from zoo.models.diffusion import DPMSolver, EulerAncestral, Heun, UniPC

T = 1000
SHAPE = (3, 1, 4, 4)


def tiny(schedule: str = "linear", timesteps: int = T):
    torch.manual_seed(0)
    m = zoo.create("ddpm", image_shape=(1, 8, 8), timesteps=timesteps, schedule=schedule,
                   channels=8, channel_mult=(1, 2), norm_groups=4)
    nonzero(m)
    return m.eval()


def net(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic stand-in for a network: smooth in x, varying with t."""
    t = float(t)
    return 0.8 * torch.tanh(x) + 0.3 * math.sin(t / 97.0) - 0.05 * x * math.cos(t / 31.0)


def to_eps(out: torch.Tensor, x: torch.Tensor, ab: float, prediction: str) -> torch.Tensor:
    if prediction == "epsilon":
        return out
    if prediction == "v_prediction":
        return ab**0.5 * out + (1 - ab) ** 0.5 * x
    return (x - ab**0.5 * out) / (1 - ab) ** 0.5


def diffusers_scheduler(cls, schedule: str, m, prediction: str, **kw):
    sched = cls(num_train_timesteps=T, prediction_type=prediction, beta_start=1e-4,
                beta_end=0.02,
                beta_schedule="linear" if schedule == "linear" else "squaredcos_cap_v2", **kw)
    sched.alphas_cumprod = m.schedule.alphas_cumprod.clone()  # zoo's float64 schedule
    return sched


def compare(sampler, sched, m, steps: int, prediction: str, tol: float = 1e-5):
    """Run zoo's sampler and diffusers' scheduler side by side in float64 from the same x_T,
    network and noise; the network's inputs, timesteps and the result must agree."""
    sampler = sampler.bind(m)
    plan = sampler.plan(m.schedule)
    sched.set_timesteps(steps)
    # diffusers keeps its sigmas in float32; as float64 (the same values) its 0-dim sigma
    # arithmetic stops losing the digits it otherwise does (sigma_down at the cosine
    # schedule's sigma_max = 2e4 cancels to no correct digit in float32)
    sched.sigmas = sched.sigmas.double()
    # from index 0: diffusers finds its first step by value, and where the first timestep
    # repeats (Karras sigmas on the cosine schedule round 2e4 and 1e4 both to t = 999) it
    # starts at the second (its image-to-image rule) and runs off its table
    sched.set_begin_index(0)
    assert torch.equal(plan.t.cpu().to(sched.timesteps.dtype), sched.timesteps)
    assert len(plan) == len(sched.timesteps)
    g = torch.Generator().manual_seed(steps)
    x_T = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    sample = x_T * sched.init_noise_sigma
    x = sampler.start(plan, x_T)
    state = sampler.init_state(x)
    stochastic = isinstance(sampler, EulerAncestral) or getattr(sampler, "sde", False)
    for i, t in enumerate(sched.timesteps):
        model_in = sched.scale_model_input(sample, t)
        torch.testing.assert_close(x, model_in, atol=tol, rtol=tol)
        assert float(plan.t[i]) == float(t)
        out_ref = net(model_in, t)
        out = net(x, plan.t[i])
        # the plan's float64 abar, as the model converts v/x0 with it (1 - abar near t = 0
        # keeps only ~3 digits in float32, and an x0-prediction's eps divides by it)
        assert plan.alpha_bar.dtype == torch.float64
        eps = to_eps(out, x, float(plan.alpha_bar[i]), prediction)
        kw, z = {}, None
        if isinstance(sampler, EulerAncestral):
            kw["generator"] = torch.Generator().manual_seed(100 + i)
            z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(100 + i),
                            dtype=torch.float64)
        elif stochastic:
            z = torch.randn(SHAPE, generator=g, dtype=torch.float64)
            kw["variance_noise"] = z
        sample = sched.step(out_ref, t, sample, **kw).prev_sample
        x, _, state = sampler.step(plan, i, x, eps, z if plan.noisy[i] else None, state)
    torch.testing.assert_close(x, sample.double(), atol=tol, rtol=tol)
    return x


def clipping(options: dict) -> dict:
    """zoo's clip_x0 in diffusers' terms: thresholding at sample_max_value 1, where the
    dynamic threshold max(quantile, 1) clamped to 1 is 1: a clamp to [-1, 1]."""
    return {"thresholding": True, "sample_max_value": 1.0} if options.get("clip_x0") else {}


SCHEDULES = ["linear", "cosine"]
PREDICTIONS = ["epsilon", "v_prediction", "sample"]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize(("steps", "options"), [
    (10, {}), (20, {}), (7, {"spacing": "trailing"}), (8, {"spacing": "leading"}),
    (10, {"karras": True}), (6, {"order": 3}), (25, {"order": 3}), (5, {"order": 1}),
    (9, {"sde": True}), (16, {"lower_order_final": False}), (10, {"clip_x0": True})])
def test_dpmpp_2m_matches_diffusers(schedule, prediction, steps, options):
    m = tiny(schedule)
    kw = {"solver_order": options.get("order", 2), **clipping(options),
          "algorithm_type": "sde-dpmsolver++" if options.get("sde") else "dpmsolver++",
          "timestep_spacing": options.get("spacing", "linspace"),
          "use_karras_sigmas": options.get("karras", False),
          "lower_order_final": options.get("lower_order_final", True)}
    sched = diffusers_scheduler(diffusers.DPMSolverMultistepScheduler, schedule, m, prediction,
                                **kw)
    compare(DPMSolver(steps=steps, **options), sched, m, steps, prediction)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize(("steps", "options"), [
    (10, {}), (7, {}), (6, {"spacing": "trailing"}), (8, {"spacing": "leading"}),
    (10, {"karras": True}), (5, {"clip_x0": True})])
def test_heun_matches_diffusers(schedule, prediction, steps, options):
    m = tiny(schedule)
    kw = {"timestep_spacing": options.get("spacing", "linspace"),
          "use_karras_sigmas": options.get("karras", False),
          "clip_sample": options.get("clip_x0", False)}
    sched = diffusers_scheduler(diffusers.HeunDiscreteScheduler, schedule, m, prediction, **kw)
    compare(Heun(steps=steps, **options), sched, m, steps, prediction)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])  # diffusers: no "sample"
@pytest.mark.parametrize(("steps", "options"), [
    (10, {}), (7, {}), (6, {"spacing": "trailing"}), (8, {"spacing": "leading"})])
def test_euler_ancestral_matches_diffusers(schedule, prediction, steps, options):
    m = tiny(schedule)
    sched = diffusers_scheduler(diffusers.EulerAncestralDiscreteScheduler, schedule, m,
                                prediction, timestep_spacing=options.get("spacing", "linspace"))
    compare(EulerAncestral(steps=steps, **options), sched, m, steps, prediction)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize(("steps", "options"), [
    (10, {}), (20, {}), (7, {"spacing": "trailing"}), (8, {"spacing": "leading"}),
    (10, {"karras": True}), (6, {"order": 3}), (12, {"order": 3}), (5, {"order": 1}),
    (9, {"disable_corrector": (0, 3)}), (10, {"clip_x0": True})])
def test_unipc_matches_diffusers(schedule, prediction, steps, options):
    m = tiny(schedule)
    kw = {"solver_order": options.get("order", 2), **clipping(options),
          "timestep_spacing": options.get("spacing", "linspace"),
          "use_karras_sigmas": options.get("karras", False),
          "disable_corrector": list(options.get("disable_corrector", ()))}
    sched = diffusers_scheduler(diffusers.UniPCMultistepScheduler, schedule, m, prediction, **kw)
    compare(UniPC(steps=steps, **options), sched, m, steps, prediction)


# -- through the model ------------------------------------------------------------------


NAMES = ["dpmpp-2m", "heun", "euler-ancestral", "unipc"]


@pytest.mark.parametrize("name", NAMES)
def test_samples_end_to_end(name):
    m = tiny(timesteps=50)
    a = m.sample(3, sampler=name, steps=5, generator=torch.Generator().manual_seed(0))
    b = m.sample(3, sampler=name, steps=5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 1, 8, 8) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    u = m.sample_unit(2, sampler=name, steps=5, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(u).all()  # not clipped: an untrained network's x0 leaves [-1, 1]


@pytest.mark.parametrize("name", NAMES)
def test_options_parse_and_bind(name):
    m = tiny(timesteps=50)
    s = m.parse_sampler({"sampler": name, "steps": "4", "spacing": "trailing"})
    assert s.name == name and s.steps == 4 and s.spacing == "trailing"
    assert s.canonical()["steps"] == 4
    assert name in s.label()
    default = m.parse_sampler({"sampler": name})
    # multistep solvers visit S + 1 distinct timesteps: S <= T - 1
    assert default.steps == (49 if name in ("dpmpp-2m", "unipc") else 50)
    with pytest.raises(ConfigError, match="steps must be in 1..50"):
        m.parse_sampler({"sampler": name, "steps": 51})
    with pytest.raises(ConfigError, match="spacing"):
        m.parse_sampler({"sampler": name, "spacing": "cubic"})


def test_heun_plan_has_a_row_per_network_call():
    m = tiny(timesteps=50)
    s = m.parse_sampler({"sampler": "heun", "steps": 6})
    assert len(s.plan(m.schedule)) == 11
    assert "11 network calls" in s.label()


def test_bad_options():
    m = tiny(timesteps=50)
    with pytest.raises(ConfigError, match="order must be 1, 2 or 3"):
        m.parse_sampler({"sampler": "dpmpp-2m", "order": 4})
    with pytest.raises(ConfigError, match="repeats timesteps"):
        m.parse_sampler({"sampler": "unipc", "steps": 50, "spacing": "leading"})


def test_non_finite_samples_are_an_error_naming_the_guidance(monkeypatch):
    from helpers import TINY_DDPM, gen, nonzero_ddpm

    from zoo.errors import NonFiniteSamples
    from zoo.nn.likelihood import from_unit

    m = nonzero_ddpm({**TINY_DDPM, "conditional": True, "num_classes": 3})
    with pytest.raises(NonFiniteSamples, match=r"^guidance 1e\+30 overflowed to non-finite "
                                               r"values \(NaN or inf\); use a smaller"):
        m.sample(2, generator=gen(), labels=1, sampler="dpmpp-2m", steps=5, guidance=1e30)
    real_eps = m._eps
    monkeypatch.setattr(m, "_eps", lambda *a, **k: real_eps(*a, **k) * math.nan)
    with pytest.raises(NonFiniteSamples, match=r"^guidance 1e\+30 overflowed"):
        m.sample(2, generator=gen(), labels=1, sampler="ddim", steps=5, guidance=1e30)
    with pytest.raises(NonFiniteSamples, match=r"^sampling overflowed to non-finite values "
                                               r"\(NaN or inf\); check the sampler's options"):
        m.sample(2, generator=gen(), labels=1, sampler="ddim", steps=5)
    with pytest.raises(NonFiniteSamples):  # every family's floats become pixels here
        from_unit(torch.tensor([0.0, math.nan]))
