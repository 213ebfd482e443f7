"""Public grids of a release policy: the only parameters a release spec may pick for quantiles, histograms,
bands and value forms.

A parameter the requester chooses freely can isolate persons: a quantile level of 1e-12 is the minimum, a
histogram edge moved by 0.5 puts one home in a bin of its own, a sum of ``amount_eur + 10,000,000`` defeats the
dominance rule, and a capped mean next to the raw mean of the same group gives the top value. So every such
parameter comes from a grid the privacy officer declares and signs here (``[grids]`` of the release policy), and
each value variable is aggregated in exactly one form (raw, or clipped to the declared interval), never two.

- ``quantile_levels``: the quantile levels a quantile spec may ask for;
- ``histogram_edges.<variable>``: the one set of edges a histogram of that variable uses;
- ``bands.<variable>``: inner edges that band a numeric variable when it is a grouping variable (``by``) or
  when a test bins it (open outer bands, so no band edge is the data's minimum or maximum);
- ``value_clip.<variable>``: the interval every sum and mean of that variable is clipped to (its only form).
"""

from __future__ import annotations

import itertools
import math

from pydantic import Field, model_validator

from kansrijk.policy.common import PolicyModel

DEFAULT_QUANTILE_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


class PublicGrids(PolicyModel):
    """The ``[grids]`` section of a release policy."""

    quantile_levels: tuple[float, ...] = Field(
        default=DEFAULT_QUANTILE_LEVELS,
        min_length=1,
        description="Quantile levels a quantile release may use (strictly between 0 and 1).",
    )
    histogram_edges: dict[str, tuple[float, ...]] = Field(
        default_factory=dict, description="Per variable: the edges of its histogram (at least two, increasing)."
    )
    bands: dict[str, tuple[float, ...]] = Field(
        default_factory=dict,
        description="Per numeric variable: inner band edges used when it groups a table or is binned by a test.",
    )
    value_clip: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Per value variable: every sum and mean clips its values to this (lower, upper) interval.",
    )

    @model_validator(mode="after")
    def _well_formed(self) -> PublicGrids:
        for q in self.quantile_levels:
            if not (math.isfinite(q) and 0.0 < q < 1.0):
                raise ValueError(f"quantile_levels: {q} must lie strictly between 0 and 1 (0 and 1 are min and max)")
        for section, grids, minimum in (("histogram_edges", self.histogram_edges, 2), ("bands", self.bands, 1)):
            for name, edges in grids.items():
                if len(edges) < minimum or not all(math.isfinite(e) for e in edges):
                    raise ValueError(f"{section}.{name}: give at least {minimum} finite values")
                if any(b <= a for a, b in itertools.pairwise(edges)):
                    raise ValueError(f"{section}.{name}: values must be strictly increasing")
        for name, (lo, hi) in self.value_clip.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"value_clip.{name}: need finite lower < upper")
        return self


__all__ = ["DEFAULT_QUANTILE_LEVELS", "PublicGrids"]
