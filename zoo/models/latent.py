"""The bond between a latent model and its autoencoder (``autoencoders``).

A latent model (``latent-diffusion``, ``vq-transformer``) names the autoencoder run it
works over in its ``autoencoder`` option (a run directory or a model file). At creation
the autoencoder's weights are read from there, frozen and held inside the latent model,
and its class, config and the sha256 of its weights are recorded in the latent model's
config; so the latent model's checkpoint holds both stages, rebuilds the autoencoder
without the original run, and refuses to load when the autoencoder weights it holds are
not the ones it was trained over (``check_autoencoder``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ..core import (
    MODEL_FILE,
    CheckpointError,
    ConfigError,
    GenerativeModel,
    build_model,
    config_from_dict,
    config_to_dict,
    from_checkpoint_dict,
    model_class,
    torch_load,
)
from ..readers import parse_json

#: metadata of a config field that zoo fills in at creation (from ``autoencoder``): shown
#: in run.json, never given by a user (``zoo.create`` refuses it, the model card omits it)
FILLED = {"filled": True}


def weights_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict: every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, as bytes
    return h.hexdigest()


def attach_autoencoder(model: GenerativeModel, autoencoder_class: type, name: str) -> nn.Module:
    """The frozen autoencoder (an ``autoencoder_class``) of the latent model ``name`` being
    built, from its config's ``autoencoder_spec`` (a checkpoint being loaded: the weights
    follow) or, on a new model, read from the run its ``autoencoder`` option names; the
    model's config is replaced by one with ``autoencoder_spec`` and ``autoencoder_sha256``
    filled in. Its image shape must be the latent model's. On the meta device (zoo sizing a
    model before building it) only the architecture is built."""
    c = model.config
    wanted = autoencoder_name(autoencoder_class)
    meta = torch.empty(0).device.type == "meta"
    if c.autoencoder_spec:
        try:
            spec = parse_json(c.autoencoder_spec, f"{name}'s autoencoder_spec")
            cls = model_class(spec["class"], f"{name}'s autoencoder_spec")
            config = parse_json(spec["config"], f"{name}'s autoencoder config")
            ae = build_model(cls, config_from_dict(cls.Config, config), spec["image_shape"])
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{name}'s autoencoder_spec is not a valid autoencoder "
                              f"description ({e})") from None
        where = "its autoencoder_spec"
    else:
        if not c.autoencoder:
            raise ConfigError(f"{name} works over a trained autoencoder: give --set "
                              f"autoencoder=RUN (a {wanted} run directory, from "
                              f"`zoo train {wanted} --dataset D --out RUN`)")
        path = Path(c.autoencoder)
        file = path / MODEL_FILE if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(f"autoencoder {c.autoencoder} holds no trained model ({file} is "
                              f"missing); train one with `zoo train {wanted} "
                              f"--dataset D --out {c.autoencoder}`")
        ckpt = torch_load(file, "autoencoder")
        if meta:
            cls = model_class(ckpt.get("class", ""), str(file))
            ae = build_model(cls, config_from_dict(cls.Config,
                                                   parse_json(ckpt["config"], f"{file}'s config")),
                             ckpt["image_shape"])
        else:
            ae = from_checkpoint_dict(ckpt, source=str(file))
            model.config = dataclasses.replace(
                c, autoencoder_sha256=weights_sha256(ae),
                autoencoder_spec=json.dumps({
                    "class": f"{type(ae).__module__}:{type(ae).__qualname__}",
                    "name": ae.name, "config": json.dumps(config_to_dict(ae.config)),
                    "image_shape": list(ae.image_shape)}))
        where = str(c.autoencoder)
    if not isinstance(ae, autoencoder_class):
        raise ConfigError(f"{name} works over a {wanted}; {where} holds a "
                          f"{ae.name} ({type(ae).__name__})")
    if tuple(ae.image_shape) != tuple(model.image_shape):
        raise ConfigError(f"the autoencoder ({where}) was trained on images of shape "
                          f"{tuple(ae.image_shape)}, but {name} is built for "
                          f"{tuple(model.image_shape)}; train both on the same dataset")
    ae.requires_grad_(False)
    ae.eval()
    return ae


class LatentStage:
    """Mixed into a latent model ahead of its pixel family: the held autoencoder
    (``self.autoencoder``, set by ``attach_autoencoder``) stays frozen in inference mode and
    is hash-checked when a checkpoint loads."""

    def check_loaded(self, source: str) -> None:
        check_autoencoder(self, source)

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoencoder.eval()
        return self


def check_autoencoder(model: GenerativeModel, source: str) -> None:
    """Refuse a loaded latent model whose autoencoder weights do not hash to the recorded
    ``autoencoder_sha256`` (a corrupt file, or weights from another run), or that records
    none: zoo fills it in whenever it creates a latent model, so a checkpoint without one
    was edited, and its weights could not be checked."""
    want = model.config.autoencoder_sha256
    if not want:
        raise CheckpointError(f"{source}: its config records no autoencoder_sha256, so its "
                              "autoencoder weights cannot be checked; the file is corrupt or "
                              "was edited")
    got = weights_sha256(model.autoencoder)
    if got != want:
        raise CheckpointError(f"{source}: its autoencoder weights (sha256 {got[:12]}...) are not "
                              f"the ones it was trained over ({want[:12]}...); the file is "
                              "corrupt or was edited")


def autoencoder_name(autoencoder_class: type) -> str:
    """The registered name of an autoencoder class."""
    name = autoencoder_class.__name__
    return {"KLAutoencoder": "kl-autoencoder", "VQVAE": "vq-vae"}.get(name, name)
