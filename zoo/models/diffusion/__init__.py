"""The diffusion family (see ``model``): the noise schedule, one sampler per file, the bound."""

from .ancestral import Ancestral
from .bound import NLLResult, timestep_proposal, vb_terms_nats
from .ddim import DDIM, ddim_plan, sampling_timesteps
from .model import DDPM, MODELS, DDPMConfig
from .sampler import DiffusionSampler, SamplingPlan
from .schedule import NoiseSchedule, make_betas

__all__ = ["DDIM", "DDPM", "MODELS", "Ancestral", "DDPMConfig", "DiffusionSampler",
           "NLLResult", "NoiseSchedule", "SamplingPlan", "ddim_plan", "make_betas",
           "sampling_timesteps", "timestep_proposal", "vb_terms_nats"]
