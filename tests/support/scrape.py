"""Read a /metrics page the way Prometheus does (prometheus_client's text parser) and look
up sample values by name and labels."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from runner import metrics


class Samples:
    """Every sample of one scrape: (name, labels) -> value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self._values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def get(self, name: str, **labels: str) -> float | None:
        """The value of the sample with exactly these labels; None when there is none."""
        return self._values.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        """Like get(), but an absent sample counts as 0 (a labelled counter that never moved)."""
        found = self.get(name, **labels)
        return 0.0 if found is None else found

    def labelled(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample of `name`, by its label set."""
        return {labels: v for (n, labels), v in self._values.items() if n == name}

    def by_label(self, name: str, label: str) -> Mapping[str, float]:
        """Samples of `name` summed by one label's value (as `sum by (label)` would)."""
        out: dict[str, float] = {}
        for labels, v in self.labelled(name).items():
            if label in dict(labels):
                out[dict(labels)[label]] = out.get(dict(labels)[label], 0.0) + v
        return out

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of `name` that has these labels (and any others)."""
        wanted = set(labels.items())
        return sum(v for found, v in self.labelled(name).items() if wanted <= found)


def in_process() -> Samples:
    """This process's metrics, for a runner that runs in a thread of the test."""
    body, _ = metrics.render()
    return Samples(body.decode())


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        return Samples(r.read().decode())
