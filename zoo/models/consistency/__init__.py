"""The consistency family (see ``model``): consistency training and distillation, and
multistep consistency sampling on the diffusion samplers' contract (``sampler``)."""

from .model import MODELS, Consistency, ConsistencyConfig
from .sampler import EDM, ConsistencyPlan, Multistep

__all__ = ["EDM", "MODELS", "Consistency", "ConsistencyConfig", "ConsistencyPlan",
           "Multistep"]
