"""Reading Prometheus text the way a scraper does, for asserting on the real /metrics answers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample called ``name`` whose labels include ``labels``; 0 if none.

    Counters are absent until first incremented, so "never counted" reads as 0.
    """
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else 0.0


def label_values(text: str, name: str, label: str) -> set[str]:
    """Every value ``label`` takes among the samples called ``name``."""
    return {
        s.labels[label]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and label in s.labels
    }
