"""Per-prediction explanations: interventional Shapley values of the served probability.

Attributions are computed per ensemble member against a fixed-seed background from the bundle's
reference rows; their mean is reported with an interval from the members' spread
(docs/architecture.md, "Explanations").
"""

from service.explain.background import Background, background_from_columns, load_background
from service.explain.coalitions import (
    MAX_EXACT_FEATURES,
    CoalitionPlan,
    PermutationPlan,
    exact_plan,
    permutation_plan,
    shapley_weight,
)
from service.explain.defaults import (
    DEFAULT_BACKGROUND_ROWS,
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_ROWS,
    DEFAULT_QUEUE_SIZE,
)
from service.explain.encode import encode_explanation
from service.explain.errors import BackgroundError, ExplainerBusy, ExplanationDeadlineExceeded
from service.explain.explainer import (
    Explainer,
    ExplainerSettings,
    ExplainOutcome,
)
from service.explain.importance import GlobalImportance, global_importance
from service.explain.result import InstanceExplanation
from service.explain.shapley import DEFAULT_PERMUTATIONS, Plan, choose_plan, explain_rows
from service.explain.spread import member_interval
from service.explain.valuation import DEFAULT_CHUNK_ROWS, ModelFunction

__all__ = [
    "DEFAULT_BACKGROUND_ROWS",
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_DEADLINE_S",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_PERMUTATIONS",
    "DEFAULT_QUEUE_SIZE",
    "MAX_EXACT_FEATURES",
    "Background",
    "BackgroundError",
    "CoalitionPlan",
    "ExplainOutcome",
    "Explainer",
    "ExplainerBusy",
    "ExplainerSettings",
    "ExplanationDeadlineExceeded",
    "GlobalImportance",
    "InstanceExplanation",
    "ModelFunction",
    "PermutationPlan",
    "Plan",
    "background_from_columns",
    "choose_plan",
    "encode_explanation",
    "exact_plan",
    "explain_rows",
    "global_importance",
    "load_background",
    "member_interval",
    "permutation_plan",
    "shapley_weight",
]
