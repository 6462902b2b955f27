"""The consistency family: multistep sampling step for step against diffusers'
``CMStochasticIterativeScheduler`` from the same network function and noise, the improved
training recipe's pieces against their closed forms, the boundary condition, the training
losses, and distillation from a teacher held in the checkpoint."""

from __future__ import annotations

import math

import diffusers
import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, gen, nonzero, zoo_main

import zoo
from zoo.core import CheckpointError, ConfigError
from zoo.models.consistency import EDM, Multistep
from zoo.models.consistency.recipe import (
    curriculum,
    interval_weights,
    karras_grid,
    lognormal_weights,
    pseudo_huber,
)
from zoo.models.flow import TIME_SCALE

TINY = {"channels": 8, "norm_groups": 4, "max_levels": 2}
SHAPE = (2, 1, 8, 8)


def tiny(seed: int = 0, **config):
    """A consistency model whose U-Net output is not zero (a fresh one's last layer is)."""
    torch.manual_seed(seed)
    m = zoo.create("consistency", image_shape=(1, 8, 8), **{**TINY, **config})
    nonzero(m)
    return m.eval()


def network(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic stand-in for the U-Net F(c_in x, t): smooth, varying with t."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *[1] * (x.dim() - 1))
    return 0.9 * torch.tanh(2 * x) + 0.2 * torch.sin(t / 301.0) - 0.1 * x * torch.cos(t / 97.0)


# -- sampling against diffusers ------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 4, 7])
@pytest.mark.parametrize(("intervals", "clip"), [(40, True), (18, False), (151, True)])
def test_multistep_matches_diffusers(steps, intervals, clip):
    """Step for step in float64 from the same x, network function and per-step noise: the
    same timesteps, network inputs and samples, to 1e-5."""
    sched = diffusers.CMStochasticIterativeScheduler(num_train_timesteps=intervals,
                                                     clip_denoised=clip)
    sched.set_timesteps(steps)
    sampler = Multistep(steps=steps, intervals=intervals, clip_x0=clip).bind(tiny())
    plan = sampler.plan(EDM(), torch.device("cpu"))
    torch.testing.assert_close(plan.t, sched.timesteps.float(), atol=1e-4, rtol=1e-6)
    assert len(plan) == steps and plan.init_scale == sched.init_noise_sigma
    x1 = torch.randn(SHAPE, generator=gen(steps), dtype=torch.float64)
    sample = x1 * sched.init_noise_sigma
    x = sampler.start(plan, x1.clone())
    ours, theirs = gen(7), gen(7)  # diffusers draws at every step; the last one's is unused
    for i, t in enumerate(sched.timesteps):
        scaled = sched.scale_model_input(sample, t)
        torch.testing.assert_close(x * plan.c_in[i], scaled, atol=1e-5, rtol=1e-5)
        sample = sched.step(network(scaled, t), t, sample, generator=theirs).prev_sample
        z = torch.randn(SHAPE, generator=ours, dtype=torch.float64) if plan.noisy[i] else None
        x, _, _ = sampler.step(plan, i, x, network(x * plan.c_in[i], plan.t[i]), z, ())
        torch.testing.assert_close(x, sample, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_sample_through_the_model_matches_diffusers_pipeline(steps):
    """The model feeds its network c_in x and 250 log sigma as diffusers'
    ``ConsistencyModelPipeline`` does, from ``noise=`` and the generator's per-step noise."""
    m = tiny()
    calls = []

    def forward(x, t, *labels):
        calls.append(x.shape[0])
        return network(x, t).to(x.dtype)

    m.net.forward = forward
    x1 = torch.randn(2, 1, 8, 8, generator=gen(3))
    ours = m.sample_unit(2, noise=x1, steps=steps, generator=gen(5))
    sched = diffusers.CMStochasticIterativeScheduler()
    sched.set_timesteps(steps)
    x, theirs = x1 * sched.init_noise_sigma, gen(5)
    for t in sched.timesteps:
        x = sched.step(network(sched.scale_model_input(x, t), t), t, x,
                       generator=theirs).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)
    assert len(calls) == steps == Multistep(steps=steps).network_calls()


def test_sampler_options_are_checked():
    m = tiny()
    with pytest.raises(ConfigError, match=r"steps must be in 1..40"):
        m.sample(1, steps=41)
    with pytest.raises(ConfigError, match="s_noise"):
        m.sample(1, s_noise=-1)
    with pytest.raises(ConfigError, match="guidance needs a class-conditional"):
        m.sample(1, guidance=2.0)
    assert m.parse_sampler({}) == Multistep(steps=2)  # the measured default
    assert "consistency" in m.parse_sampler({"steps": 2}).label()


# -- the recipe's pieces -------------------------------------------------------------------------


def test_the_curriculum_doubles_from_s0_to_s1():
    """N(k) = min(s0 2^floor(k / K'), s1) + 1, K' = floor(K / (log2 floor(s1 / s0) + 1)):
    with s0 = 10, s1 = 1280, K = 800 it doubles every 100 steps from 11 to 1281."""
    assert [curriculum(k, 800) for k in (0, 99, 100, 250, 399, 600, 699, 700, 10**6)] == \
        [11, 11, 21, 41, 81, 641, 641, 1281, 1281]
    assert curriculum(7, 1) == 1281 and curriculum(6, 1) == 641  # K' at least 1
    m = tiny(curriculum_steps=8)
    m.trained_steps.fill_(7)
    assert m.intervals() == 1281


def test_the_boundary_condition_and_scalings():
    edm = EDM()
    c_skip, c_out = edm.scalings(edm.sigma_min)
    assert c_skip == 1.0 and c_out == 0.0
    c_skip, c_out = edm.scalings(1e4)
    assert c_skip < 1e-8 and c_out == pytest.approx(0.5, rel=1e-3)
    assert edm.c_in(0.0) == pytest.approx(2.0) and edm.c_noise(1.0) == 0.0
    m = tiny()  # f(x, sigma_min) = x whatever the network says
    g = m.grid(11)
    x = torch.randn(SHAPE, generator=gen(0))
    j = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(m.consistency_fn(m.net, x, j, g, ()), x)


def test_the_grid_its_lognormal_distribution_and_weights():
    edm = EDM()
    sig = karras_grid(11, edm)
    assert sig[0] == pytest.approx(0.002) and sig[-1] == pytest.approx(80.0)
    assert np.all(np.diff(sig) > 0)
    p = lognormal_weights(sig)
    cdf = [math.erf((math.log(s) + 1.1) / (math.sqrt(2) * 2.0)) for s in sig]
    np.testing.assert_allclose(p, np.diff(cdf) / (cdf[-1] - cdf[0]), rtol=1e-12)
    assert p.sum() == pytest.approx(1.0) and (p > 0).all()
    np.testing.assert_allclose(interval_weights(sig), 1 / np.diff(sig))


def test_pseudo_huber_is_between_l2_and_l1():
    a = torch.zeros(3, 4)
    b = torch.tensor([[3.0, 4.0, 0, 0], [1e-3, 0, 0, 0], [0, 0, 0, 0]])
    d = pseudo_huber(a, b, c=0.5)
    torch.testing.assert_close(d, torch.tensor([math.sqrt(25.25) - 0.5,
                                                math.sqrt(1e-6 + 0.25) - 0.5, 0.0]))
    assert d[1] == pytest.approx(1e-6 / (2 * 0.5), rel=1e-5)  # ~ ||d||^2 / 2c near 0


def test_consistency_training_loss_is_the_closed_form():
    """With F = 0, f(x, sigma) = c_skip(sigma) x: the loss is lambda_i times the
    pseudo-Huber distance of c_skip(sigma_{i+1}) (x0 + sigma_{i+1} z) and c_skip(sigma_i)
    (x0 + sigma_i z), i and z replayed from the batch noise stream."""
    m = tiny().train()
    m.net.forward = lambda x, t, *y: torch.zeros_like(x, requires_grad=True)
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8, generator=gen(0))
    m.attach_training(noise_generator=gen(4))
    loss = m.train_step(images, m.configure_optimizers())["loss"]
    assert int(m.trained_steps) == 1
    m.attach_training(noise_generator=gen(4))
    sig = torch.tensor(karras_grid(11, EDM()))
    cdf = torch.tensor(np.cumsum(lognormal_weights(sig.numpy())), dtype=torch.float32)
    i = torch.searchsorted(cdf, m.batch_rand(16)).clamp(max=9)
    z = m.batch_randn(16, 1, 8, 8).double()
    x0 = images.double() / 127.5 - 1
    v = (-1, 1, 1, 1)

    def f(s):
        return EDM().scalings(s)[0].view(v) * (x0 + s.view(v) * z)

    want = (1 / (sig[i + 1] - sig[i])) * pseudo_huber(f(sig[i + 1]), f(sig[i]), 0.00054 * 8)
    assert loss == pytest.approx(float(want.mean()), rel=1e-4)


def test_bad_options_are_config_errors():
    for bad, match in (({"sigma_min": 0}, "sigma_min"), ({"sigma_max": 0.001}, "sigma_max"),
                       ({"s1": 5}, "s1"), ({"huber_c": 0}, "huber_c"),
                       ({"distill_intervals": 1}, "distill_intervals")):
        with pytest.raises(ConfigError, match=match):
            tiny(**bad)


# -- distillation --------------------------------------------------------------------------------


def _teacher(tmp_path, name: str = "flow-matching", **config):
    torch.manual_seed(1)
    t = zoo.create(name, image_shape=(1, 8, 8), **{**TINY, **config})
    nonzero(t)
    path = tmp_path / f"{name}.pt"
    t.save(path)
    return t, path


def test_the_teacher_step_is_the_flows_euler_step(tmp_path):
    """x at sigma_i is one Euler step of the flow's ODE in t = sigma / (1 + sigma), mapped
    back to x_sigma = x_t / (1 - t)."""
    teacher, path = _teacher(tmp_path)
    m = tiny(teacher=str(path))
    g = m.grid(m.intervals())
    x = torch.randn(SHAPE, generator=gen(0)) * 3
    j = torch.tensor([5, 12])
    with torch.no_grad():
        eps = m._teacher_eps(x, j, g, ())
        s, s_prev = g["sigma"][j].view(-1, 1, 1, 1), g["sigma"][j - 1].view(-1, 1, 1, 1)
        t, t_prev = s / (1 + s), s_prev / (1 + s_prev)
        x_t = x / (1 + s)
        v = teacher.net(x_t, (t * TIME_SCALE).flatten())
        want = (x_t + (t_prev - t) * v) / (1 - t_prev)
    torch.testing.assert_close(x + (s_prev - s) * eps, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["flow-matching", "ddpm"])
def test_distillation_runs_and_saves_a_self_contained_checkpoint(tmp_path, name):
    teacher, path = _teacher(tmp_path, name)
    m = tiny(teacher=str(path)).train()
    assert m.intervals() == 19 and len(m.config.teacher_sha256) == 64
    assert m.configure_optimizers()["consistency"].param_groups[0]["params"] == \
        list(m.net.parameters())
    m.attach_training(noise_generator=gen(0))
    opt = m.configure_optimizers()
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=gen(0))
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    assert all(math.isfinite(m.train_step(images, opt)["loss"]) for _ in range(2))
    assert all(torch.equal(v, m.teacher.state_dict()[k]) for k, v in before.items())
    m.save(tmp_path / "cm.pt")
    path.unlink()  # the checkpoint holds the teacher: its run is not needed
    back = zoo.load(tmp_path / "cm.pt")
    assert type(back.teacher) is type(teacher) and back.config == m.config
    torch.testing.assert_close(back.teacher.net.state_dict(), teacher.net.state_dict())
    assert torch.equal(back.sample(2, generator=gen(1), steps=2),
                       m.eval().sample(2, generator=gen(1), steps=2))
    ckpt = torch.load(tmp_path / "cm.pt", weights_only=False)
    key = next(k for k in ckpt["state_dict"] if k.startswith("teacher.net."))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1
    torch.save(ckpt, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="teacher weights .* are not the ones"):
        zoo.load(tmp_path / "edited.pt")


def test_a_bad_teacher_is_a_one_line_error(tmp_path):
    gan = zoo.create("gan-dcgan", image_shape=(1, 8, 8))
    gan.save(tmp_path / "gan.pt")
    with pytest.raises(ConfigError, match="distills a ddpm or flow-matching run; .* holds a"):
        tiny(teacher=str(tmp_path / "gan.pt"))
    _, path = _teacher(tmp_path, conditional=True, num_classes=3)
    with pytest.raises(ConfigError, match="teacher is class-conditional .*conditional=true"):
        tiny(teacher=str(path))
    with pytest.raises(ConfigError, match="filled in by zoo"):
        tiny(teacher_sha256="0" * 64)
    proc = zoo_main("train", "consistency", "--dataset", "mnist", "--steps", "1", "--out",
                   str(tmp_path / "run"), "--set", f"teacher={tmp_path / 'none'}", check=False)
    assert_one_line_error(proc, "teacher", "holds no trained model")
