"""Explainers of SAE features: Steering, Top-k and Steering-informed Top-k, with one interface."""

from vis_steer_lens.explain.base import RESULT_COLUMNS, Explainer, parse_features
from vis_steer_lens.explain.factory import make_explainer
from vis_steer_lens.explain.prompts import PromptSet, get_prompt, list_prompts, register_prompt
from vis_steer_lens.explain.results import ResultsFile, ResumeMismatchError, read_results
from vis_steer_lens.explain.settings import (
    DIRECTIONS,
    METHODS,
    HybridSettings,
    SteeringSettings,
    TopKSettings,
    settings_for,
)
from vis_steer_lens.explain.steering import SteeringExplainer
from vis_steer_lens.explain.text import SentenceEndStop, clean_explanation
from vis_steer_lens.explain.topk import SteeringInformedTopKExplainer, TopKExplainer

__all__ = [
    "DIRECTIONS",
    "HybridSettings",
    "SteeringSettings",
    "TopKSettings",
    "settings_for",
    "RESULT_COLUMNS",
    "Explainer",
    "METHODS",
    "PromptSet",
    "ResultsFile",
    "ResumeMismatchError",
    "SentenceEndStop",
    "SteeringExplainer",
    "SteeringInformedTopKExplainer",
    "TopKExplainer",
    "clean_explanation",
    "get_prompt",
    "list_prompts",
    "make_explainer",
    "parse_features",
    "read_results",
    "register_prompt",
]
