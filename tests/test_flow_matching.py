"""The flow-matching family: its Euler and Heun samplers step for step against diffusers'
FlowMatch schedulers from the same velocity function (defaults and a shift), every sampler
against the exact flow of a Gaussian, training, guidance, ``noise=`` and the captured loop."""

from __future__ import annotations

import math

import diffusers
import pytest
import torch
from helpers import capture_on_cpu, gen, nonzero

import zoo
from zoo.core import Batch, ConfigError
from zoo.models.flow import TIME_SCALE, Euler, Heun, Midpoint

SHAPE = (3, 1, 4, 4)
TINY = {"channels": 8, "norm_groups": 4, "max_levels": 2}


def tiny(seed: int = 0, **config):
    """A flow model whose U-Net output is not zero (a fresh one's last layer is)."""
    torch.manual_seed(seed)
    m = zoo.create("flow-matching", image_shape=(1, 8, 8), **{**TINY, **config})
    nonzero(m)
    return m.eval()


def velocity(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic stand-in for a network: smooth in x, varying with the timestep."""
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *[1] * (x.dim() - 1))
    return 0.8 * torch.tanh(x) + 0.3 * torch.sin(t / 97.0) - 0.05 * x * torch.cos(t / 31.0)


def compare(sampler, sched, steps: int, tol: float = 1e-5):
    """zoo's sampler and diffusers' scheduler side by side in float64 from the same x_1 and
    velocity function: the same timesteps (to the bit), network inputs and result."""
    m = tiny()
    sampler = sampler.bind(m)
    plan = sampler.plan(torch.device("cpu"))
    sched.set_timesteps(steps)
    assert torch.equal(plan.t, sched.timesteps)
    assert len(plan) == sampler.network_calls()
    x1 = torch.randn(SHAPE, generator=gen(steps), dtype=torch.float64)
    sample, x = x1.clone(), x1.clone()
    state = sampler.init_state(x)
    for i, t in enumerate(sched.timesteps):
        torch.testing.assert_close(x, sample.double(), atol=tol, rtol=tol)
        sample = sched.step(velocity(sample, t), t, sample).prev_sample
        x, _, state = sampler.step(plan, i, x, velocity(x, plan.t[i]), None, state)
    torch.testing.assert_close(x, sample.double(), atol=tol, rtol=tol)


STEPS = [1, 2, 7, 10, 28]
SHIFTS = [1.0, 3.0, 0.5]


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("shift", SHIFTS)
def test_euler_matches_diffusers(steps, shift):
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    compare(Euler(steps=steps, shift=shift), sched, steps)


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("shift", SHIFTS)
def test_heun_matches_diffusers(steps, shift):
    sched = diffusers.FlowMatchHeunDiscreteScheduler(shift=shift)
    compare(Heun(steps=steps, shift=shift), sched, steps)


def test_the_defaults_are_diffusers_defaults():
    for cls, ref in ((Euler, diffusers.FlowMatchEulerDiscreteScheduler),
                     (Heun, diffusers.FlowMatchHeunDiscreteScheduler)):
        sched = ref()
        sched.set_timesteps(50)  # diffusers' pipelines' default num_inference_steps
        bound = cls().bind(tiny())
        assert bound.steps == 50 and bound.shift == sched.config.shift == 1.0
        assert torch.equal(bound.plan(torch.device("cpu")).t, sched.timesteps)


def _fake_net(m, fn):
    """``m.net`` replaced by ``fn(x, t)``, counting its calls."""
    calls = []

    def forward(x, t, *labels):
        calls.append(x.shape[0])
        return fn(x, t).to(x.dtype)

    m.net.forward = forward
    return calls


@pytest.mark.parametrize(("cls", "ref"), [(Euler, diffusers.FlowMatchEulerDiscreteScheduler),
                                          (Heun, diffusers.FlowMatchHeunDiscreteScheduler)])
def test_sample_through_the_model_matches_diffusers(cls, ref):
    """The model feeds its network 1000 t and x exactly as diffusers' pipeline loop does."""
    m = tiny()
    calls = _fake_net(m, velocity)
    x1 = torch.randn(2, 1, 8, 8, generator=gen(3))
    ours = m.sample_unit(2, noise=x1, sampler=cls.name, steps=6, shift=2.0)
    sched = ref(shift=2.0)
    sched.set_timesteps(6)
    x = x1.clone()
    for t in sched.timesteps:
        x = sched.step(velocity(x, t), t, x).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)
    assert len(calls) == cls(steps=6).network_calls()


def gaussian_velocity(s: float):
    """The exact velocity of the linear path from data N(0, s^2 I): E[noise - x0 | x_t] =
    x (t - (1 - t) s^2) / ((1 - t)^2 s^2 + t^2); its flow maps x_1 to x_0 = s x_1."""
    def v(x, t):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1, 1, 1) / TIME_SCALE
        return (x * (t - (1 - t) * s**2) / ((1 - t) ** 2 * s**2 + t**2)).to(x.dtype)
    return v


@pytest.mark.parametrize("name", ["euler", "heun", "midpoint"])
def test_every_sampler_integrates_a_known_flow(name):
    """Against the exact flow of a Gaussian: the error shrinks with the steps, at first
    order for Euler and second order for Heun and midpoint."""
    m = tiny()
    _fake_net(m, gaussian_velocity(0.5))
    x1 = torch.randn(4, 1, 8, 8, generator=gen(1))
    errors = [(m.sample_unit(4, noise=x1, sampler=name, steps=s) - 0.5 * x1).abs().max()
              for s in (16, 32)]
    order = torch.log2(errors[0] / errors[1])
    assert errors[1] < (0.1 if name == "euler" else 1e-3)
    assert (0.8 < order < 1.3) if name == "euler" else (order > 1.7), (name, errors)


def test_midpoint_is_second_order_with_its_own_tables():
    m = tiny()
    plan = Midpoint(steps=3).bind(m).plan(torch.device("cpu"))
    assert len(plan) == 6 and Midpoint(steps=3).network_calls() == 6
    assert torch.allclose(plan.sigma[1::2], (plan.sigma[::2] + torch.cat(
        [plan.sigma[2::2], plan.sigma.new_zeros(1)])) / 2, atol=1e-7)
    assert "6 network calls" in Midpoint(steps=3).bind(m).label()


def test_trailing_spacing_takes_equal_steps():
    """Diffusers' grid spends its last step on [0.001, 0] (2 steps: one of nearly the whole
    path); ``spacing="trailing"`` takes S equal ones, shifted as the default's are."""
    m = tiny()
    assert Euler(steps=2).bind(m).times()[0].tolist() == pytest.approx([1.0, 0.001])
    t, dt = Euler(steps=4, spacing="trailing").bind(m).times()
    assert t.tolist() == [1.0, 0.75, 0.5, 0.25] and dt.tolist() == [-0.25] * 4
    shifted, _ = Heun(steps=2, shift=3.0, spacing="trailing").bind(m).times()
    assert shifted.tolist() == pytest.approx([1.0, 0.75])  # 3 t / (1 + 2 t) at t = 1/2
    assert "euler(spacing=trailing), 2 steps" == Euler(steps=2, spacing="trailing").label()
    with pytest.raises(ConfigError, match="spacing"):
        m.sample(1, spacing="leading")


# -- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("time_sampling", ["uniform", "logit-normal"])
def test_training_regresses_the_velocity_of_the_linear_path(time_sampling):
    m = tiny(time_sampling=time_sampling).train()
    m.attach_training(noise_generator=gen(4))
    seen = {}

    def forward(x, t, *labels):
        seen.update(x=x, t=t)
        return torch.zeros_like(x, requires_grad=True)

    m.net.forward = forward
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=gen(0))
    m.attach_training(noise_generator=gen(4))
    loss = m.train_step(images, m.configure_optimizers())["loss"]
    # replay the draws: t, then the noise; the loss is ||0 - (noise - x0)||^2
    m.attach_training(noise_generator=gen(4))
    t = m.sample_times(64)
    noise = m.batch_randn(64, 1, 8, 8)
    x0 = images.float() / 127.5 - 1
    torch.testing.assert_close(seen["t"], t * TIME_SCALE)
    torch.testing.assert_close(seen["x"], (1 - t.view(-1, 1, 1, 1)) * x0
                               + t.view(-1, 1, 1, 1) * noise)
    assert loss == pytest.approx(float((noise - x0).square().mean()), rel=1e-5)
    assert 0 <= float(t.min()) and float(t.max()) <= 1
    if time_sampling == "logit-normal":  # concentrated in the middle
        assert float(((t - 0.5).abs() < 0.25).float().mean()) > 0.6


def test_a_few_steps_reduce_the_loss():
    m = tiny().train()
    m.attach_training(noise_generator=gen(0))
    opt = m.configure_optimizers()
    x = torch.zeros(16, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 2:6, 2:6] = 255
    losses = [m.train_step(x, opt)["loss"] for _ in range(30)]
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="time_sampling"):
        tiny(time_sampling="cubic")
    with pytest.raises(ConfigError, match="logit_std"):
        tiny(time_sampling="logit-normal", logit_std=0)
    m = tiny()
    with pytest.raises(ConfigError, match="shift must be > 0"):
        m.sample(1, shift=0)
    with pytest.raises(ConfigError, match=r"steps must be in 1..1000"):
        m.sample(1, steps=0)
    with pytest.raises(ConfigError, match="guidance needs a class-conditional"):
        m.sample(1, guidance=2.0)
    with pytest.raises(ConfigError, match="unknown sampler 'ddim'"):
        m.sample(1, sampler="ddim")


# -- guidance, noise=, the captured loop ---------------------------------------------------------


def test_guidance_mixes_the_velocities_in_one_batched_call():
    m = tiny(conditional=True, num_classes=3)
    calls = []
    real = m.net.forward

    def forward(x, t, *labels):
        calls.append(x.shape[0])
        return real(x, t, *labels)

    m.net.forward = forward
    x = torch.randn(2, 1, 8, 8, generator=gen(0))
    t = torch.tensor([500.0])
    y = torch.tensor([0, 2])
    with torch.no_grad():
        v_y, v_null = real(x, t, y), real(x, t, torch.tensor([3, 3]))
        guided = m._guided_net(x, t, m._guided_labels(y, 2.5), 2.5)
    torch.testing.assert_close(guided, v_null + 2.5 * (v_y - v_null))
    calls.clear()
    m.sample(2, labels=y, guidance=2.5, sampler="heun", steps=3, generator=gen(1))
    assert calls == [4] * 5  # 2 S - 1 calls, both labels batched in each
    null = m.sample(2, guidance=0.0, labels=y, sampler="euler", steps=3, generator=gen(1))
    assert torch.equal(null, m.sample(2, sampler="euler", steps=3, generator=gen(1)))


def test_given_noise_gives_the_same_images_for_any_batch_size():
    m = tiny()
    x1 = torch.randn(5, 1, 8, 8, generator=gen(2))
    a = m.sample(5, noise=x1, batch_size=5, steps=3)
    assert torch.equal(a, m.sample(5, noise=x1, batch_size=2, steps=3, generator=gen(9)))
    assert not torch.equal(a, m.sample(5, noise=-x1, batch_size=5, steps=3))
    with pytest.raises(ConfigError, match=r"shape \[5, 1, 8, 8\]"):
        m.sample(5, noise=torch.randn(4, 1, 8, 8))


@pytest.mark.parametrize("options", [{"sampler": "euler", "steps": 3},
                                     {"sampler": "heun", "steps": 3, "shift": 3.0},
                                     {"sampler": "midpoint", "steps": 2}])
def test_the_captured_loop_replays_like_the_eager_loop(options, monkeypatch):
    import zoo.models.diffusion.loop as module

    monkeypatch.setattr(module, "capture", capture_on_cpu)
    monkeypatch.setattr(module, "graph_mode", lambda value, device: (value is True, False))
    m = tiny(conditional=True, num_classes=3)

    def draw(graph, seed, labels):
        return m.sample(3, labels=labels, guidance=2.0, generator=gen(seed), batch_size=3,
                        cuda_graph=graph, **options)

    for seed, labels in ((1, torch.tensor([0, 1, 2])), (2, torch.tensor([2, 2, 0]))):
        assert torch.equal(draw(True, seed, labels), draw(False, seed, labels))
    assert len(m._loop_graphs.graphs) == 1  # new labels and noise, the same graph


def test_conditional_training_takes_labels():
    m = tiny(conditional=True, num_classes=3).train()
    m.attach_training(noise_generator=gen(0))
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=gen(0))
    out = m.train_step(Batch(images, torch.tensor([0, 1, 2, 0])), m.configure_optimizers())
    assert out["loss"] > 0


# -- over a kl-autoencoder -----------------------------------------------------------------------


def test_latent_flow_matching_runs_in_the_autoencoders_latents(tmp_path):
    torch.manual_seed(0)
    ae = zoo.create("kl-autoencoder", image_shape=(1, 8, 8), channels=8)
    ae.save(tmp_path / "ae.pt")
    with pytest.raises(ConfigError, match="latent-flow-matching works over a trained"):
        zoo.create("latent-flow-matching", image_shape=(1, 8, 8), **TINY)
    m = zoo.create("latent-flow-matching", image_shape=(1, 8, 8),
                   autoencoder=str(tmp_path / "ae.pt"), **TINY)
    assert m.space_shape == ae.latent_shape != (1, 8, 8)
    assert m.config.autoencoder_sha256 and m.samplers == (Euler, Heun, Midpoint)
    z = torch.randn(2, *ae.latent_shape, generator=gen(0))
    x = m.sample(2, noise=z, sampler="euler", steps=2)
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.uint8
    with pytest.raises(ConfigError, match="noise must have shape"):
        m.sample(2, noise=torch.randn(2, 1, 8, 8))
    m.train().attach_training(noise_generator=gen(0))
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=gen(0))
    before = {k: v.clone() for k, v in m.autoencoder.state_dict().items()}
    assert m.train_step(images, m.configure_optimizers())["loss"] > 0
    assert all(torch.equal(v, m.autoencoder.state_dict()[k]) for k, v in before.items())


# -- the ODE likelihood --------------------------------------------------------------------------


def _gaussian_log_density(z: torch.Tensor, s: float) -> torch.Tensor:
    d = z[0].numel()
    return (-0.5 * z.double().square().flatten(1).sum(1) / s**2
            - d * (math.log(s) + 0.5 * math.log(2 * math.pi)))


def test_the_ode_log_density_of_a_gaussian_is_its_closed_form():
    """The exact divergence integrates to log N(z; 0, s^2 I)."""
    from zoo.models.flow.likelihood import ode_log_density

    s = 0.5
    v = gaussian_velocity(s)
    z = torch.randn(3, 1, 4, 4, generator=gen(0), dtype=torch.float64) * s
    exact = ode_log_density(lambda x, t: v(x, t * TIME_SCALE), z, steps=32, method="exact")
    torch.testing.assert_close(exact, _gaussian_log_density(z, s), rtol=1e-3, atol=1e-3)


def test_hutchinsons_estimate_is_unbiased_around_the_exact_divergence():
    """A field with off-diagonal Jacobian entries (Rademacher probes are exact on a diagonal
    one): the mean of 64 probes is within 4 standard errors of the exact log density."""
    from zoo.models.flow.likelihood import ode_log_density

    v = gaussian_velocity(0.5)

    def velocity(x, t):
        return v(x, t * TIME_SCALE) + 0.4 * torch.tanh(x.roll(1, -1)) * (1 - t)

    z = torch.randn(3, 1, 4, 4, generator=gen(0), dtype=torch.float64) * 0.5
    exact = ode_log_density(velocity, z, steps=16, method="exact")
    draws = torch.stack([ode_log_density(velocity, z, steps=16, method="hutchinson",
                                         generator=gen(k)) for k in range(64)])
    err = draws.std(0) / 8
    assert (err > 1e-3).all()
    assert ((draws.mean(0) - exact).abs() < 4 * err).all()


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
def test_nll_is_the_dequantized_bound_in_bits_per_dim(method):
    """Through the model, against a Gaussian of known density: bits/dim = E_u[-log p(z)] /
    (D ln 2) + log2(127.5), z the dequantized pixels."""
    s = 0.6
    m = tiny(nll_steps=48)
    _fake_net(m, gaussian_velocity(s))
    images = torch.randint(100, 156, (2, 1, 8, 8), dtype=torch.uint8, generator=gen(1))
    out = m.nll_with_stderr(images, method=method, K=8, generator=gen(2))
    x = images.double() / 127.5 - 1
    u = torch.rand(x.repeat_interleave(8, 0).shape, generator=gen(2)) - 0.5
    z = x.repeat_interleave(8, 0) + u.double() / 127.5
    want = ((-_gaussian_log_density(z, s) + 64 * math.log(127.5)) / (64 * math.log(2)))
    torch.testing.assert_close(out.bpd.double(), want.view(2, 8).mean(1), rtol=0, atol=2e-3)
    assert out.bpd.shape == out.stderr.shape == (2,) and (out.stderr > 0).all()
    assert m.nll(images, method=method, K=2).shape == (2,)
    assert ("exact divergence" if method == "exact" else "Hutchinson") in out.detail


def test_nll_options_are_checked():
    m = tiny()
    images = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="K must be >= 2"):
        m.nll(images, K=1)
    with pytest.raises(ConfigError, match="unknown method 'trace'"):
        m.nll(images, method="trace")
    with pytest.raises(ConfigError, match="unknown nll option"):
        m.nll(images, draws=3)
    with pytest.raises(ConfigError, match="nll_samples must be >= 2"):
        tiny(nll_samples=1)
    assert "K=4" in m.describe_nll() and "Hutchinson" in m.describe_nll()


def test_the_default_sampler_is_midpoint_at_ten_network_calls():
    s = tiny().parse_sampler({})
    assert s == Midpoint(steps=5) and s.network_calls() == 10
    assert tiny().parse_sampler({"steps": 8}) == Midpoint(steps=8)
