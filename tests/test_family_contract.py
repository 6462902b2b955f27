"""The family contract: every obligation a ``GenerativeModel`` has towards the Trainer, the
harness, DDP and the CLI, checked over every registered model.

A new family passes this file or is not done. The obligations are the ones stated in
``zoo.core.GenerativeModel``'s docstring; each test names the one it checks.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect

import pytest
import torch

import zoo
from zoo import registry
from zoo.core import Batch, ConfigError, GenerativeModel, LikelihoodUnavailable

SHAPE = (1, 8, 8)
NAMES = registry.available()
#: one name per model class: the behavioural checks run once per class, on its first name
CLASSES = list({registry.spec(n).cls: n for n in reversed(NAMES)}.values())[::-1]


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict:
    """{(model name, image shape, config): path} of untrained first stages (a latent
    model's autoencoder, a student's teacher), saved once."""
    root = tmp_path_factory.mktemp("stages")
    made: dict = {}

    def path(name: str, shape: tuple, **config) -> str:
        key = (name, shape, tuple(sorted(config.items())))
        if key not in made:
            file = root / f"{name}-{'x'.join(map(str, shape))}-{len(made)}.pt"
            zoo.create(name, image_shape=shape, **config).save(file)
            made[key] = str(file)
        return made[key]

    return path


def build(name: str, stages, shape=SHAPE, **options) -> GenerativeModel:
    """``zoo.create(name)`` at its default config (a latent model over an untrained
    autoencoder of its kind, a student over an untrained teacher of its kind, which the
    class conditioning asked for goes to where the student takes it from its teacher),
    seeded so that two builds are the same model."""
    cls = registry.spec(name).cls
    stage_shape = (1, 28, 28) if shape == "mnist" else tuple(shape)
    first = getattr(cls, "autoencoder_model", None)
    if first is not None:
        options = {"autoencoder": stages(first, stage_shape), **options}
    teacher = getattr(cls, "teacher_model", None)
    if teacher is not None:
        adopted = {k: options.pop(k) for k in ("conditional", "num_classes")
                   if k in options and k in registry.filled_fields(name)}
        options = {"teacher": stages(teacher, stage_shape, **adopted), **options}
    torch.manual_seed(0)
    if shape == "mnist":
        return zoo.create(name, dataset="mnist", **options)
    return zoo.create(name, image_shape=shape, **options)


def quick(model: GenerativeModel) -> dict:
    """Sampler options for a fast draw: the default sampler, at 2 steps when it has steps."""
    options = dict(model.default_sampler)
    cls = registry.sampler_class(model.family, options.get("sampler", model.samplers[0].name))
    if cls is not None and "steps" in {f.name for f in dataclasses.fields(cls)}:
        options["steps"] = 2
    return options


def images(n: int = 4, shape=SHAPE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- declarations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_builds_at_its_default_config_on_mnist_and_declares_itself(name, stages):
    """Obligation: build at default config on mnist; declare family, likelihood, samplers."""
    m = build(name, stages, shape="mnist")
    cls = type(m)
    assert m.image_shape == (1, 28, 28)
    assert isinstance(cls.family, str) and cls.family
    assert cls.likelihood in ("exact", "bound", None)
    assert dataclasses.is_dataclass(cls.Config) and isinstance(m.config, cls.Config)
    assert cls.samplers and all(s.name for s in cls.samplers)
    assert not m.conditional and m.num_classes is None


@pytest.mark.parametrize("name", NAMES)
def test_optimizers_are_built_with_core_adam(name, stages):
    """Obligation: every optimizer comes from ``zoo.core.adam`` (torch's fused Adam)."""
    m = build(name, stages)
    optimizers = m.configure_optimizers()
    assert optimizers and isinstance(optimizers, dict)
    for opt in optimizers.values():
        assert isinstance(opt, torch.optim.Adam | torch.optim.AdamW)
        assert opt.defaults["fused"] is True, f"{name}: {type(opt).__name__} is not fused"


@pytest.mark.parametrize("name", CLASSES)
def test_ddp_modules_hold_every_parameter_an_optimizer_updates(name, stages):
    """Obligation: ``ddp_modules`` (DDP wraps each) covers every optimized parameter."""
    m = build(name, stages)
    wrapped = {id(p) for mod in m.ddp_modules().values() for p in mod.parameters()}
    for key, opt in m.configure_optimizers().items():
        for group in opt.param_groups:
            missing = [p.shape for p in group["params"] if id(p) not in wrapped]
            assert not missing, f"{name}: optimizer {key} updates parameters outside DDP"


# -- training -------------------------------------------------------------------------------------


def _steps(m: GenerativeModel, noise_seed: int, global_seed: int, n: int = 2) -> list[dict]:
    m.attach_training(noise_generator=gen(noise_seed))
    optimizers = m.configure_optimizers()
    torch.manual_seed(global_seed)
    return [m.train_step(Batch.unlabelled(images(4, seed=i)), optimizers) for i in range(n)]


@pytest.mark.parametrize("name", CLASSES)
def test_train_step_draws_its_noise_from_the_batch_stream(name, stages):
    """Obligations: ``train_step`` takes a Batch and returns float losses; its randomness
    comes from ``batch_rand*`` (the Trainer's noise generator), never the global one, or DDP
    ranks would not draw what one process draws."""
    a = build(name, stages)
    b = copy.deepcopy(a)
    losses = _steps(a, noise_seed=5, global_seed=1)
    assert losses[0] and all(isinstance(v, float) for v in losses[0].values())
    assert _steps(b, noise_seed=5, global_seed=2) == losses, (
        f"{name}: train_step depends on the global random state")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("name", CLASSES)
def test_train_step_takes_bare_images_as_unlabelled(name, stages):
    """Obligation: ``train_step`` validates through ``check_batch``: bare uint8 images are an
    unlabelled batch, floats are refused with a ConfigError."""
    m = build(name, stages)
    optimizers = m.configure_optimizers()
    assert m.train_step(images(), optimizers)
    with pytest.raises(ConfigError):
        m.train_step(images().float(), optimizers)


# -- sampling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSES)
def test_sample_takes_batch_size_and_returns_seeded_uint8_images(name, stages):
    """Obligation: ``sample(n, generator=, batch_size=, **sampler options)`` returns uint8
    [n, C, H, W], the same for the same generator (the harness times with ``batch_size``)."""
    m = build(name, stages)
    assert "batch_size" in inspect.signature(GenerativeModel.sample).parameters
    x = m.sample(3, generator=gen(0), batch_size=2, **quick(m))
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, *SHAPE)
    assert torch.equal(m.sample(3, generator=gen(0), batch_size=2, **quick(m)), x)
    with pytest.raises(ConfigError, match="no_such_option"):
        m.sample(1, no_such_option=1)


@pytest.mark.parametrize("name", CLASSES)
def test_labels_are_taken_only_by_a_conditional_model(name, stages):
    """Obligations: name the fields ``conditional``/``num_classes``; refuse labels until
    conditional; a conditional model trains on labelled batches (``check_labels``,
    ``check_batch``) and samples the classes asked for, refusing others."""
    m = build(name, stages)
    with pytest.raises(ConfigError, match="not class-conditional"):
        m.sample(2, labels=torch.tensor([3, 7]), **quick(m))
    if "conditional" not in {f.name for f in dataclasses.fields(m.Config)}:
        return
    c = build(name, stages, conditional=True, num_classes=10)
    assert c.conditional and c.num_classes == 10
    optimizers = c.configure_optimizers()
    assert c.train_step(Batch(images(), torch.tensor([0, 3, 9, 1])), optimizers)
    with pytest.raises(ConfigError, match="class-conditional"):
        c.train_step(Batch(images(), torch.tensor([0, 3, 10, 1])), optimizers)
    x = c.sample(2, labels=torch.tensor([3, 7]), generator=gen(0), **quick(c))
    assert x.dtype == torch.uint8 and tuple(x.shape) == (2, *SHAPE)
    with pytest.raises(ConfigError):
        c.sample(2, labels=torch.tensor([3, 10]), **quick(c))


# -- likelihood and checkpoints -------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSES)
def test_nll_is_bits_per_dim_or_says_why_not(name, stages):
    """Obligation: ``nll`` returns one finite value per image where ``likelihood`` is set,
    and raises LikelihoodUnavailable where it is None."""
    m = build(name, stages)
    if type(m).likelihood is None:
        with pytest.raises(LikelihoodUnavailable):
            m.nll(images(2))
        return
    bits = m.nll(images(2))
    assert bits.shape == (2,) and torch.isfinite(bits).all() and (bits > 0).all()


@pytest.mark.parametrize("name", CLASSES)
def test_save_and_load_round_trip_config_and_weights(name, stages, tmp_path):
    """Obligation: ``save``/``load`` round-trip the config and the weights: a loaded model
    saved again loads as the same model (the same samples). (A family may finish its weights
    on save, as the GAN re-estimates its BatchNorm statistics: hence the second round.)"""
    m = build(name, stages)
    m.save(tmp_path / "m.pt")
    back = zoo.load(tmp_path / "m.pt")
    assert type(back) is type(m) and back.config == m.config
    back.save(tmp_path / "again.pt")
    again = zoo.load(tmp_path / "again.pt")
    assert torch.equal(again.sample(2, generator=gen(1), **quick(m)),
                       back.sample(2, generator=gen(1), **quick(m)))
