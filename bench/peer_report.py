"""This service against the best peer (taskiq or Dramatiq) per measure: issue 17's comparison.

In each repetition the best peer is whichever did best on that measure in that repetition
(most jobs/s, least CPU, shortest drain or pickup...), so the ratio compares figures taken
minutes apart on the same machine; the ratios are then summarised as median [min-max], as in
the rest of RESULTS.md.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PEERS = ("taskiq_list", "taskiq_stream", "dramatiq")
Series = list[float]


@dataclass(frozen=True)
class Measure:
    name: str
    scenario: str
    metric: str
    higher_is_better: bool
    goal: str = "-"  # issue 17's goal for the ratio, where it sets one


MEASURES = [
    Measure("No-op jobs/s", "noop", "jobs_per_s", True, ">= 2"),
    Measure("Worker CPU s per 1,000 no-op jobs", "noop", "worker_cpu_s_per_1000", False, "<= 0.5"),
    Measure("I/O drain, x floor", "io", "x_floor", False, "<= 1"),
    Measure("Pickup p50, ms", "pickup", "pickup_p50_ms", False, "<= 1"),
    Measure("Pickup p99, ms", "pickup", "pickup_p99_ms", False),
    Measure("Idle worker CPU, % of a core", "pickup", "idle_cpu_pct", False),
    Measure("Idle worker RSS, MiB", "pickup", "worker_rss_idle", False),
]


@dataclass
class Comparison:
    measure: Measure
    ours: Series
    best: Series  # the best peer's figure, per repetition
    best_by: list[str]  # which peer that was, per repetition

    @property
    def ratios(self) -> Series:
        return [o / b for o, b in zip(self.ours, self.best, strict=False) if b and o == o]

    @property
    def most_often_best(self) -> str:
        return Counter(self.best_by).most_common(1)[0][0] if self.best_by else "-"


def _series(results: dict[str, Any], scenario: str, system: str, metric: str) -> Series:
    series: Series = results.get(scenario, {}).get(system, {}).get(metric, [])
    return series


def compare(results: dict[str, Any], measure: Measure) -> Comparison:
    """This service's figure and the best peer's, repetition by repetition."""
    ours = _series(results, measure.scenario, "ours", measure.metric)
    peers = {p: _series(results, measure.scenario, p, measure.metric) for p in PEERS}
    best: Series = []
    best_by: list[str] = []
    for rep in range(len(ours)):
        figures = {p: s[rep] for p, s in peers.items() if len(s) > rep and s[rep] == s[rep]}
        if not figures:
            continue
        pick = max if measure.higher_is_better else min
        winner = pick(figures, key=figures.__getitem__)
        best.append(figures[winner])
        best_by.append(winner)
    return Comparison(measure, ours[: len(best)], best, best_by)


def comparisons(results: dict[str, Any]) -> list[Comparison]:
    """Every measure that this service and at least one peer ran."""
    found = [compare(results, measure) for measure in MEASURES]
    return [c for c in found if c.best]


def section(
    results: dict[str, Any], labels: dict[str, str], span: Callable[[Series, int], str]
) -> list[str]:
    """RESULTS.md's "Against the best peer" section; empty when no peer ran."""
    rows = comparisons(results)
    if not rows:
        return []
    lines = [
        "",
        "## Against the best peer (issue 17: taskiq, Dramatiq)",
        "",
        "The best peer is taken per repetition and per measure; ratio = this service / that "
        "peer. Goals are issue 17's, shown for reference.",
        "",
        "| measure | this service | best peer | best peer (most often) | ratio | better when "
        "| goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        digits = 3 if row.measure.metric == "worker_cpu_s_per_1000" else 2
        lines.append(
            f"| {row.measure.name} | {span(row.ours, digits)} | {span(row.best, digits)} "
            f"| {labels.get(row.most_often_best, row.most_often_best)} "
            f"| {span(row.ratios, 2)} | {'higher' if row.measure.higher_is_better else 'lower'} "
            f"| {row.measure.goal} |"
        )
    return lines


def draw(axes: Any, results: dict[str, Any]) -> None:
    """The plot's panel: each ratio to the best peer, parity dashed."""
    rows = [row for row in comparisons(results) if row.ratios]
    medians = [statistics.median(row.ratios) for row in rows]
    names = [
        f"{row.measure.name}\n({'higher' if row.measure.higher_is_better else 'lower'} better)"
        for row in rows
    ]
    colors = [
        "#3b7dd8" if (m >= 1) == row.measure.higher_is_better else "#d0342c"
        for m, row in zip(medians, rows, strict=True)
    ]
    axes.bar(range(len(rows)), medians, color=colors)
    axes.axhline(1, color="#444444", linestyle="--")
    for index, value in enumerate(medians):
        axes.annotate(f"{value:.2f}", (index, value), ha="center", va="bottom")
    axes.set_xticks(range(len(rows)), names, fontsize=6, rotation=30, ha="right")
    axes.set_title("this service / best peer (blue: ahead, red: behind)")
