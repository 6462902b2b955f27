"""The diffusion family (see ``model``): the noise schedule, one sampler per file, the bound."""

from .ancestral import Ancestral
from .bound import NLLResult, timestep_proposal, vb_terms_nats
from .ddim import DDIM, ddim_plan, sampling_timesteps
from .dpm_solver import DPMSolver
from .euler_ancestral import EulerAncestral
from .heun import Heun
from .model import DDPM, MODELS, DDPMConfig
from .sampler import DiffusionSampler, SamplingPlan
from .schedule import NoiseSchedule, make_betas
from .unipc import UniPC

__all__ = ["DDIM", "DDPM", "MODELS", "Ancestral", "DDPMConfig", "DPMSolver", "DiffusionSampler",
           "EulerAncestral", "Heun", "NLLResult", "NoiseSchedule", "SamplingPlan", "UniPC",
           "ddim_plan", "make_betas", "sampling_timesteps", "timestep_proposal", "vb_terms_nats"]
