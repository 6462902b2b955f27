"""The flow-matching family (see ``model``): one ODE sampler per file on ``sampler``'s
contract."""

from .euler import Euler
from .heun import Heun
from .midpoint import Midpoint
from .model import MODELS, FlowMatching, FlowMatchingConfig
from .sampler import TIME_SCALE, FlowPlan, FlowSampler, flow_times

__all__ = ["MODELS", "TIME_SCALE", "Euler", "FlowMatching", "FlowMatchingConfig", "FlowPlan",
           "FlowSampler", "Heun", "Midpoint", "flow_times"]
