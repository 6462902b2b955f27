"""Rectified flow's reflow and one-step distillation (Liu et al. 2023, "Flow Straight and
Fast", sections 2.3 and 3): a trained flow (the teacher, a ``flow-matching`` or
``rectified-flow`` run named by ``teacher``) couples each noise z with the image its ODE
takes z to, x_0 = ODE_teacher(z), and a student learns the flow of those coupled pairs with
flow matching's loss (``FlowMatching.regress``): x_t = (1 - t) x_0 + t z, target z - x_0
(zoo's convention: t = 1 is noise). The pairs' straight lines cross less than those of
independent (data, noise) pairs, so the student's paths are straighter (``straightness``)
and few Euler steps sample it well.

- The student is the teacher's network (its U-Net options and class conditioning are
  filled in from the teacher) and starts from its weights, as Liu et al. do.
- Pairs are drawn fresh for every batch: z from the batch noise stream, x_0 from the frozen
  teacher's Euler ODE over ``pair_steps`` equal steps (``pairs``); the batch's images are
  not read, its labels are (a conditional teacher draws x_0 of the batch's classes).
  Liu et al. draw a fixed set of pairs once; each of a fixed set's pairs is used once in
  a run as short as zoo's, where drawing it costs what drawing per batch costs, and per
  batch needs no storage, never reuses a pair, and resumes from the Trainer's noise stream.
- ``distill=true`` trains the one-step map instead: t = 1 always, so the loss is
  || (z - v(z, 1)) - x_0 ||^2, the L2 distance of the one-step sample to the teacher's
  (Liu et al. use LPIPS, which needs pretrained weights zoo does not ship); one Euler step
  then samples exactly what was trained.

The teacher is held frozen inside the model (``zoo.models.latent.TeacherStage``): the
checkpoint is self-contained and refuses a teacher whose weights changed. A
``rectified-flow`` teacher (2-rectified flow, or distilling a reflow) holds its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from ... import progress
from ...core import ConfigError, ModelSpec
from ...nn.unet import UNetConfig
from ...options import check_range
from ..latent import FILLED, FROM_TEACHER, TeacherStage
from .model import FlowMatching, FlowMatchingConfig


@dataclass
class RectifiedFlowConfig(FlowMatchingConfig):
    """``flow-matching``'s training options; the network's options (the U-Net's,
    ``conditional``, ``num_classes``) are the teacher's, filled in; the teacher run, its ODE
    and what the student learns."""

    channels: int = field(default=UNetConfig.channels, metadata=FROM_TEACHER)
    channel_mult: tuple[int, ...] | None = field(default=None, metadata=FROM_TEACHER)
    max_levels: int = field(default=UNetConfig.max_levels, metadata=FROM_TEACHER)
    num_res_blocks: int = field(default=UNetConfig.num_res_blocks, metadata=FROM_TEACHER)
    attention_levels: tuple[int, ...] = field(default=(), metadata=FROM_TEACHER)
    mid_attention: bool = field(default=UNetConfig.mid_attention, metadata=FROM_TEACHER)
    attention_heads: int = field(default=UNetConfig.attention_heads, metadata=FROM_TEACHER)
    dropout: float = field(default=UNetConfig.dropout, metadata=FROM_TEACHER)
    norm_groups: int = field(default=UNetConfig.norm_groups, metadata=FROM_TEACHER)
    conditional: bool = field(default=False, metadata=FROM_TEACHER)
    num_classes: int | None = field(default=None, metadata=FROM_TEACHER)
    teacher: str = ""  # the flow-matching or rectified-flow run to straighten (required)
    pair_steps: int = 20  # Euler steps (network calls) of the teacher's ODE per pair
    distill: bool = False  # learn the one-step map z -> x_0 (t = 1) instead of the flow
    teacher_sha256: str = field(default="", metadata=FILLED)  # its weights' hash
    teacher_spec: str = field(default="", metadata=FILLED)  # its class, config, shape


#: the student's fields taken from its teacher: it is the teacher's network
ADOPTED = tuple(f.name for f in dataclasses.fields(RectifiedFlowConfig)
                if dict(f.metadata) == FROM_TEACHER)

#: the default samplers (``RectifiedFlow.default_sampler``; docs/flow-matching.md has the
#: measurement)
DEFAULT_SAMPLER = {"sampler": "euler", "steps": 2, "spacing": "trailing"}
DISTILLED_SAMPLER = {"sampler": "euler", "steps": 1}


class RectifiedFlow(TeacherStage, FlowMatching):
    """A flow trained on its teacher's coupled (noise, image) pairs (reflow), or its
    one-step map (``distill``)."""

    family = "rectified-flow"
    color = "#ff7f0e"
    Config = RectifiedFlowConfig
    teacher_model: ClassVar[str] = "flow-matching"  # the model its teacher run is

    @property
    def default_sampler(self) -> dict:
        """Euler: one step for a distilled model (what it was trained for: on MNIST FID 12.6
        at 1 call, worse at 2 and 4), else two equal steps (on MNIST 1 to 2 calls gains 3.1,
        2 to 4 calls 1.1; docs/flow-matching.md has the measurement)."""
        return dict(DISTILLED_SAMPLER if self.config.distill else DEFAULT_SAMPLER)

    def build_unet(self) -> None:
        """The frozen teacher, then the student's U-Net as the teacher's, starting from its
        weights (a new model; a loaded one reads its own)."""
        c = self.config
        check_range(c.pair_steps, "pair_steps", least=1)
        if not c.teacher and not c.teacher_spec:
            raise ConfigError(f"{self.family} straightens a trained flow: give --set "
                              "teacher=RUN (a flow-matching run directory, from `zoo train "
                              "flow-matching --dataset D --out RUN`)")
        self.teacher = self.attach_teacher(
            (FlowMatching,), "straightens a flow-matching or rectified-flow run",
            "flow-matching", adopt=ADOPTED)
        super().build_unet()
        if not c.teacher_spec and torch.empty(0).device.type != "meta":
            self.net.load_state_dict(self.teacher.net.state_dict())

    # -- training ------------------------------------------------------------------------
    @torch.no_grad()
    def pairs(self, n: int, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(z, x_0): n noises z ~ N(0, I) from the batch noise stream and the images the
        teacher's ODE takes them to (Euler, ``pair_steps`` equal steps), of ``labels`` for
        a conditional teacher. Deterministic given the stream."""
        z = self.batch_randn(n, *self.space_shape)
        with progress.uncounted():  # not a sampling loop the user asked for
            x0 = self.teacher.sample_unit(n, noise=z, labels=labels, batch_size=n,
                                          cuda_graph=False, sampler="euler",
                                          steps=self.config.pair_steps, spacing="trailing")
        return z, x0.clone()  # a tensor autograd may save, not an inference tensor

    def train_step(self, x, optimizers):
        """One step of flow matching's loss (``regress``) on coupled pairs (``pairs``), at
        t drawn as flow matching draws it, or at t = 1 with ``distill``."""
        batch = self.check_batch(x)
        n = batch.images.shape[0]
        z, x0 = self.pairs(n, batch.labels if self.conditional else None)
        t = torch.ones(n, device=z.device) if self.config.distill else self.sample_times(n)
        return self.regress(x0, z, t, batch.labels, optimizers)


MODELS = {
    "rectified-flow": ModelSpec(
        RectifiedFlow,
        "rectified flow's reflow (Liu et al.): a flow-matching run's network retrained on "
        "its own (noise, image) pairs, straighter, for 1-4 Euler steps; distill=true for "
        "one step; --set teacher=RUN",
    ),
}
