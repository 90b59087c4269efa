"""One verdict per comparison of two implementations: the question the report answers first.

For paired differences d (first minus second, in percentage points; one per seed that both ran on the same split)
and an equivalence margin m:

- one seed: no verdict;
- **equivalent within ±m** when the two one-sided t tests (TOST, statsmodels' `ttost_mean`) both reject at 5 %:
  the 90 % interval of the mean difference lies inside (−m, +m);
- otherwise **lower** or **higher** when the 95 % t interval of the mean difference excludes 0;
- otherwise **undecided**, with the number of paired seeds N that would decide at the observed mean and spread:
  the smallest N at which the 90 % interval (mean ± t(0.95, N−1)·sd/√N) would lie inside ±m, or the 95 % interval
  (± t(0.975, N−1)·sd/√N) would exclude 0. It assumes the next seeds spread as these did, so it is a rough
  guide: about half the time N seeds will decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

DEFAULT_MARGIN = 1.0  # percentage points of top-1
MOST_SEEDS = 10_000  # beyond this, "more than"

EQUIVALENT, LOWER, HIGHER, UNDECIDED, ONE_SEED = "equivalent", "lower", "higher", "undecided", "one seed"


@dataclass(frozen=True)
class Verdict:
    first: str
    second: str
    kind: str
    seeds: int
    mean: float  # pp
    interval: tuple[float, float] | None  # 95 % t interval of the mean difference, pp
    margin: float
    tost_p: float | None = None
    seeds_needed: int | None = None  # undecided: about this many paired seeds would decide

    def words(self) -> str:
        """The verdict in one line, first named as the subject."""
        difference = f"{self.first} − {self.second} = {self.mean:+.2f} pp"
        if self.kind == ONE_SEED:
            return f"one seed, no verdict ({difference})"
        interval = f"[{self.interval[0]:+.2f}, {self.interval[1]:+.2f}]"
        seeds = f"{self.seeds} paired seeds"
        if self.kind == EQUIVALENT:
            p = "" if self.tost_p is None else f", TOST p = {self.tost_p:.3f}"
            return f"equivalent within ±{self.margin:g} pp ({difference}, 95 % {interval}{p}; {seeds})"
        if self.kind in (LOWER, HIGHER):
            return f"{self.first} {self.kind} than {self.second} by {abs(self.mean):.2f} pp {interval} (95 %; {seeds})"
        needed = (f"more than {MOST_SEEDS:,}" if self.seeds_needed is None else f"about {self.seeds_needed}")
        return (f"undecided: {difference} {interval} (95 %; {seeds}); {needed} paired seeds would decide at "
                f"this spread (±{self.margin:g} pp margin)")


def verdict(first: str, second: str, differences: np.ndarray, margin: float = DEFAULT_MARGIN) -> Verdict | None:
    """The verdict on paired differences (pp); None without any pair."""
    differences = np.asarray(differences, dtype=float)
    n = len(differences)
    if n == 0:
        return None
    mean = float(differences.mean())
    if n == 1:
        return Verdict(first, second, ONE_SEED, 1, mean, None, margin)
    spread = float(differences.std(ddof=1))
    if spread == 0.0:  # every seed gave the same difference: no test has a spread to work with
        kind = EQUIVALENT if abs(mean) < margin else (LOWER if mean < 0 else HIGHER)
        return Verdict(first, second, kind, n, mean, (mean, mean), margin)
    from statsmodels.stats.weightstats import DescrStatsW

    described = DescrStatsW(differences)
    low, high = (float(bound) for bound in described.tconfint_mean(alpha=0.05))
    tost_p = float(described.ttost_mean(-margin, margin)[0])
    if tost_p < 0.05:
        kind = EQUIVALENT
    elif high < 0 or low > 0:
        kind = LOWER if high < 0 else HIGHER
    else:
        kind = UNDECIDED
    needed = seeds_to_decide(mean, spread, margin) if kind == UNDECIDED else None
    return Verdict(first, second, kind, n, mean, (low, high), margin, tost_p, needed)


def seeds_to_decide(mean: float, spread: float, margin: float) -> int | None:
    """The smallest number of paired seeds at which this mean and spread would decide (module docstring)."""
    n = np.arange(2, MOST_SEEDS + 1)
    standard_error = spread / np.sqrt(n)
    equivalence = (abs(mean) < margin) & (stats.t.ppf(0.95, n - 1) * standard_error < margin - abs(mean))
    difference = (mean != 0) & (stats.t.ppf(0.975, n - 1) * standard_error < abs(mean))
    deciding = np.flatnonzero(equivalence | difference)
    return int(n[deciding[0]]) if deciding.size else None
