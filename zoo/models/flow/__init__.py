"""The flow-matching family (see ``model``): one ODE sampler per file on ``sampler``'s
contract; rectified flow's reflow and distillation of a trained flow (``reflow``)."""

from .euler import Euler
from .heun import Heun
from .midpoint import Midpoint
from .model import MODELS as _FLOW_MODELS
from .model import FlowMatching, FlowMatchingConfig
from .reflow import MODELS as _REFLOW_MODELS
from .reflow import RectifiedFlow, RectifiedFlowConfig
from .sampler import TIME_SCALE, FlowPlan, FlowSampler, flow_times

MODELS = {**_FLOW_MODELS, **_REFLOW_MODELS}

__all__ = ["MODELS", "TIME_SCALE", "Euler", "FlowMatching", "FlowMatchingConfig", "FlowPlan",
           "FlowSampler", "Heun", "Midpoint", "RectifiedFlow", "RectifiedFlowConfig",
           "flow_times"]
