"""RanPAC's ridge classifier over randomly projected class statistics (``--method ranpac`` only)."""

from __future__ import annotations

from ....class_statistics import RidgeClassifier
from ..statistics import RANPAC_FILE
from .base import ClassStatisticsRule


class RidgeRule(ClassStatisticsRule):
    """The task of the class with the largest ridge-regression score on the method's random projection of the query
    (McDonnell et al. NeurIPS 2023, Eq. 4); the ridge penalty the adapters' held-out samples prefer."""

    name = "ridge"
    filename = RANPAC_FILE

    def classifier(self, stats):
        return RidgeClassifier(stats, stats.validation["ridge"].best() if "ridge" in stats.validation else 1e4)

    def features(self, ctx, query):
        return ctx.method.projection(query)
