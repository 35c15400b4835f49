"""Task-identity rules (``--task_id_mode``): one file per rule, registered here by name."""

from __future__ import annotations

from .base import ClassStatisticsRule, TaskIdentityRule
from .gaussian import GaussianRule
from .gradient_id import GradientID
from .max_logit import MaxLogit
from .max_softmax import MaxSoftmax
from .nearest_mean import NearestMeanRule
from .prompt_id import PromptID
from .ridge import RidgeRule

#: ``--task_id_mode`` name -> rule class. A new rule: one file in this package and one line here.
RULES: dict[str, type[TaskIdentityRule]] = {
    rule.name: rule for rule in (GradientID, PromptID, MaxLogit, MaxSoftmax, NearestMeanRule, GaussianRule, RidgeRule)
}


def get_rule(name: str) -> TaskIdentityRule:
    """The rule called ``name``. Raises ``ValueError`` listing the known names."""
    if name not in RULES:
        raise ValueError(f"--task_id_mode {name!r} is unknown; choose one of {sorted(RULES)}.")
    return RULES[name]()


__all__ = ["RULES", "ClassStatisticsRule", "TaskIdentityRule", "get_rule"]
