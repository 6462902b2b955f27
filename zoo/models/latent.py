"""The bond between a latent model and its autoencoder (``autoencoders``).

A latent model (``latent-diffusion``, ``vq-transformer``) names the autoencoder run it
works over in its ``autoencoder`` option (a run directory or a model file). At creation
the autoencoder's weights are read from there, frozen and held inside the latent model,
and its class, config and the sha256 of its weights are recorded in the latent model's
config; so the latent model's checkpoint holds both stages, rebuilds the autoencoder
without the original run, and refuses to load when the autoencoder weights it holds are
not the ones it was trained over (``check_autoencoder``). ``attach_stage`` and
``check_stage`` do the same for any frozen first stage a model holds; ``TeacherStage``
is that bond for a model trained from a frozen teacher (a distilled consistency model, a
rectified flow).
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
#: a filled field taken from the model's teacher (its network's options)
FROM_TEACHER = {**FILLED, "from": "its teacher"}


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
    built (``attach_stage`` over its ``autoencoder`` option); a new model must name one."""
    c = model.config
    wanted = autoencoder_name(autoencoder_class)
    if not c.autoencoder_spec and not c.autoencoder:
        raise ConfigError(f"{name} works over a trained autoencoder: give --set "
                          f"autoencoder=RUN (a {wanted} run directory, from "
                          f"`zoo train {wanted} --dataset D --out RUN`)")
    return attach_stage(model, "autoencoder", (autoencoder_class,), name,
                        f"works over a {wanted}", wanted)


def attach_stage(model: GenerativeModel, field: str, accepted: tuple[type, ...], name: str,
                 role: str, train_as: str) -> nn.Module:
    """The frozen first stage that model ``name``'s config option ``field`` names (a latent
    model's autoencoder, a distilled model's teacher), one of the ``accepted`` classes,
    from its config's ``<field>_spec`` (a checkpoint being loaded: the weights follow) or,
    on a new model, read from the run the option names; the model's config is replaced by
    one with ``<field>_spec`` and ``<field>_sha256`` filled in. Its image shape must be the
    model's. On the meta device (zoo sizing a model before building it) only the
    architecture is built. ``role`` says what ``name`` does with it ("works over a
    kl-autoencoder"), ``train_as`` the model to train for it."""
    c = model.config
    given, spec_text = getattr(c, field), getattr(c, f"{field}_spec")
    meta = torch.empty(0).device.type == "meta"
    if spec_text:
        try:
            spec = parse_json(spec_text, f"{name}'s {field}_spec")
            cls = model_class(spec["class"], f"{name}'s {field}_spec")
            config = parse_json(spec["config"], f"{name}'s {field} config")
            stage = build_model(cls, config_from_dict(cls.Config, config), spec["image_shape"])
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{name}'s {field}_spec is not a valid {field} "
                              f"description ({e})") from None
        where = f"its {field}_spec"
    else:
        path = Path(given)
        file = path / MODEL_FILE if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(f"{field} {given} holds no trained model ({file} is "
                              f"missing); train one with `zoo train {train_as} "
                              f"--dataset D --out {given}`")
        ckpt = torch_load(file, field)
        if meta:
            cls = model_class(ckpt.get("class", ""), str(file))
            stage = build_model(cls, config_from_dict(
                cls.Config, parse_json(ckpt["config"], f"{file}'s config")), ckpt["image_shape"])
        else:
            stage = from_checkpoint_dict(ckpt, source=str(file))
            model.config = dataclasses.replace(c, **{
                f"{field}_sha256": weights_sha256(stage),
                f"{field}_spec": json.dumps({
                    "class": f"{type(stage).__module__}:{type(stage).__qualname__}",
                    "name": stage.name, "config": json.dumps(config_to_dict(stage.config)),
                    "image_shape": list(stage.image_shape)})})
        where = str(given)
    if not isinstance(stage, accepted):
        raise ConfigError(f"{name} {role}; {where} holds a {stage.name} "
                          f"({type(stage).__name__})")
    if tuple(stage.image_shape) != tuple(model.image_shape):
        raise ConfigError(f"the {field} ({where}) was trained on images of shape "
                          f"{tuple(stage.image_shape)}, but {name} is built for "
                          f"{tuple(model.image_shape)}; train both on the same dataset")
    stage.requires_grad_(False)
    stage.eval()
    return stage


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


class TeacherStage:
    """Mixed into a model trained from a frozen pixel-space teacher run held inside it
    (``self.teacher``, from ``attach_teacher``; None for a model trained without one): the
    teacher stays in inference mode, is hash-checked when a checkpoint loads and is not
    averaged by the Trainer's EMA (``ema_module`` is the model's own ``net``)."""

    def attach_teacher(self, accepted: tuple[type, ...], role: str, train_as: str,
                       adopt: tuple[str, ...] = ()) -> GenerativeModel:
        """The frozen teacher that the config's ``teacher`` names (``attach_stage``), one of
        the ``accepted`` classes and not a latent model; the config fields ``adopt`` are
        taken from the teacher's config (a student built as its teacher), and a teacher
        whose class conditioning differs from the model's is refused."""
        teacher = attach_stage(self, "teacher", accepted, self.family, role, train_as)
        if hasattr(teacher, "autoencoder"):
            raise ConfigError(f"{self.family} {role} in pixel space; the teacher is a "
                              f"{teacher.name} (over latents)")
        if adopt:
            self.config = dataclasses.replace(
                self.config, **{k: getattr(teacher.config, k) for k in adopt})
        if teacher.conditional != self.conditional or (
                self.conditional and teacher.num_classes != self.num_classes):
            raise ConfigError(
                f"the teacher is {'not ' * (not teacher.conditional)}class-conditional"
                f"{f' ({teacher.num_classes} classes)' if teacher.conditional else ''}; "
                f"give conditional={str(teacher.conditional).lower()} to distill it")
        return teacher

    def check_loaded(self, source: str) -> None:
        if self.teacher is not None:
            check_stage(self, "teacher", source)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def ema_module(self):
        return self.net


def check_autoencoder(model: GenerativeModel, source: str) -> None:
    """``check_stage`` of a latent model's autoencoder."""
    check_stage(model, "autoencoder", source)


def check_stage(model: GenerativeModel, field: str, source: str) -> None:
    """Refuse a loaded model whose first stage (``model.<field>``) does not hash to the
    recorded ``<field>_sha256`` (a corrupt file, or weights from another run), or that
    records none: zoo fills it in whenever it creates such a model, so a checkpoint
    without one was edited, and its weights could not be checked."""
    want = getattr(model.config, f"{field}_sha256")
    if not want:
        raise CheckpointError(f"{source}: its config records no {field}_sha256, so its "
                              f"{field} weights cannot be checked; the file is corrupt or "
                              "was edited")
    got = weights_sha256(getattr(model, field))
    if got != want:
        raise CheckpointError(f"{source}: its {field} weights (sha256 {got[:12]}...) are not "
                              f"the ones it was trained over ({want[:12]}...); the file is "
                              "corrupt or was edited")


def autoencoder_name(autoencoder_class: type) -> str:
    """The registered name of an autoencoder class."""
    name = autoencoder_class.__name__
    return {"KLAutoencoder": "kl-autoencoder", "VQVAE": "vq-vae"}.get(name, name)
