"""Each candidate family's presets (sizes and learning rates that train well at a budget), and
the rule that picks one.

A preset's ``min_steps`` is the number of training steps it needs before its samples say
anything about its family: the small presets' from the CI suite's sweeps (``zoo/suites/
ci.toml``: the 35.6k-parameter Transformer's warm-up is 200 steps and it learns digits by
~300; the 16-channel DDPM draws strokes, not digits, below ~400 steps at batch 32; the
DCGAN and the VAE draw digits by ~300), the large ones' set so that a bigger network is
only picked when it gets several times the steps its small sibling needs.

The rule (``pick``): presets are ordered small to large; a candidate gets the largest
preset whose steps at the final training length reach ``min_steps``; when not even the
smallest does, the candidate is left out with a line saying so instead of being ranked on a
model that never learnt. The rounds then make sure no candidate is judged before it has had
its ``min_steps`` (``plan.rounds``' ``least_share``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class Preset:
    model: str  # registry name
    name: str  # "small", "default": what the report calls it
    config: dict = field(default_factory=dict)
    batch_size: int = 128
    train: dict = field(default_factory=dict)  # TrainConfig options (ema_decay, ...)
    min_steps: int = 300

    @property
    def label(self) -> str:
        return f"{self.model} ({self.name})"

    def with_config(self, **overrides) -> Preset:
        return dataclasses.replace(self, config={**self.config, **overrides})


_EMA = {"ema_decay": 0.995}

#: model -> presets, small to large
PRESETS: dict[str, tuple[Preset, ...]] = {
    "vae-conv": (
        Preset("vae-conv", "default", {}, 128, {}, 300),
    ),
    "gan-dcgan": (
        Preset("gan-dcgan", "default", {}, 64, _EMA, 300),
    ),
    "ar-transformer": (
        # the CI suite's sweep winner: 35.6k parameters, ~7 ms per image on a CPU core
        Preset("ar-transformer", "small", {"dim": 32, "depth": 2, "heads": 2, "mlp_ratio": 2.0,
                                           "pos_embedding": "factorized", "lr": 1e-2,
                                           "warmup_steps": 200}, 16, _EMA, 300),
        Preset("ar-transformer", "default", {}, 64, _EMA, 3000),
    ),
    "ddpm": (
        Preset("ddpm", "small", {"channels": 16}, 32, _EMA, 400),
        Preset("ddpm", "default", {}, 128, _EMA, 3000),
    ),
    "flow-matching": (
        Preset("flow-matching", "small", {"channels": 16}, 32, _EMA, 400),
        Preset("flow-matching", "default", {}, 128, _EMA, 3000),
    ),
    # consistency training from scratch (improved recipe); its step curriculum is set to
    # the tournament's final length when the run starts (``CURRICULUM``)
    "consistency": (
        Preset("consistency", "small", {"channels": 16, "lr": 1e-3}, 32, _EMA, 400),
        Preset("consistency", "default", {}, 128, _EMA, 3000),
    ),
}

#: a model option that must be the run's whole training length, set by the tournament
CURRICULUM = "curriculum_steps"

#: model -> the options of its NLL in a tournament (the CI suite's: a bound cheap enough for
#: 100 test images)
NLL_OPTIONS: dict[str, dict] = {
    "vae-conv": {"k": 20},
    "ddpm": {"mode": "estimate", "K": 4},
    "flow-matching": {"steps": 32, "K": 2},
}

#: families a tournament leaves out unless named, and why
NOT_DEFAULT = {
    "gan-mlp": "the DCGAN stands for the GAN family",
    "vae-mlp": "the convolutional VAE stands for the VAE family",
    "ar-transformer-full": "the paper-scale configuration; a GPU-days budget",
    "ddpm-full": "the paper-scale configuration; a GPU-days budget",
    "kl-autoencoder": "an autoencoder, the first stage of a latent model, not a generator",
    "vq-vae": "an autoencoder, the first stage of a latent model, not a generator",
    "latent-diffusion": "two-stage (an autoencoder run first); not yet a candidate",
    "latent-flow-matching": "two-stage (an autoencoder run first); not yet a candidate",
    "rectified-flow": "two-stage (a flow-matching teacher run first); not yet a candidate",
    "vq-transformer": "two-stage (a VQ-VAE run first); not yet a candidate",
}


def candidates(families: list[str] | None = None, exclude: list[str] | None = None
               ) -> tuple[list[str], dict[str, str]]:
    """(the models to enter, {model: why it is left out}) for ``--families``/``--exclude``."""
    from .. import registry

    known = set(registry.available())
    for name in (families or []) + (exclude or []):
        if name not in known:
            raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(known))}")
    left_out = {}
    if families:
        chosen = list(dict.fromkeys(families))
    else:
        chosen = [m for m in sorted(known) if m in PRESETS]
        left_out.update({m: why for m, why in NOT_DEFAULT.items() if m in known})
        left_out.update({m: "no presets declared" for m in sorted(known)
                         if m not in PRESETS and m not in NOT_DEFAULT})
    for name in exclude or []:
        if name in chosen:
            chosen.remove(name)
            left_out[name] = "excluded (--exclude)"
    for name in list(chosen):
        if name not in PRESETS:
            chosen.remove(name)
            left_out[name] = NOT_DEFAULT.get(name, "no presets declared")
    if not chosen:
        raise ConfigError("no candidate family left: " + "; ".join(
            f"{m}: {why}" for m, why in left_out.items()))
    return chosen, left_out


def pick(presets, final_steps) -> tuple[Preset | None, str]:
    """(the preset, why): the largest of ``presets`` (small to large) whose steps at the
    final training length (``final_steps(preset) -> int``) reach its ``min_steps``; None
    with the reason when not even the smallest does."""
    for preset in reversed(presets):
        steps = final_steps(preset)
        if steps >= preset.min_steps:
            return preset, f"{steps} steps at the final length >= {preset.min_steps} needed"
    small = presets[0]
    steps = final_steps(small)
    return None, (f"left out: its smallest preset gets {steps} steps at the final length, "
                  f"fewer than the {small.min_steps} it needs to learn; give a larger budget")
