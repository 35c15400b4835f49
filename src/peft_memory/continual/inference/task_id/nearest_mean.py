"""Nearest class mean (SimpleCIL's classifier) over the class statistics, as a task-identity rule."""

from __future__ import annotations

from ....class_statistics import NearestMean
from .base import ClassStatisticsRule


class NearestMeanRule(ClassStatisticsRule):
    """The task of the class whose L2-normalised mean is closest (cosine) to the frozen query (Zhou et al. 2023)."""

    name = "nearest_mean"

    def classifier(self, stats):
        return NearestMean(stats)
