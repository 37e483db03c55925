"""docs/metrics.md is what runner/metrics.py defines, and the docs name only real series."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from runner.lifecycle import DispatchOutcome
from runner.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("metrics_doc", ROOT / "scripts" / "metrics_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _series() -> set[str]:
    """Every name a dashboard may query: families, their samples, a counter's `_total`."""
    names: set[str] = set()
    registry = CollectorRegistry()
    Metrics(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in registry.collect():  # labelled ones have no samples yet: names from the type
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


def test_the_reference_is_generated_from_the_code() -> None:
    gen = _generator()
    text = (ROOT / "docs" / "metrics.md").read_text()
    assert gen.current_tables(text) == gen.render_tables(), (
        "docs/metrics.md differs from runner/metrics.py: run .venv/bin/python scripts/metrics_doc.py --write"
    )


def test_every_outcome_and_both_sums_are_listed() -> None:
    tables = _generator().render_tables()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (yes \| (?:yes|-)|- \| (?:yes|-)) \|$", tables, flags=re.M))
    assert set(rows) == {o.value for o in DispatchOutcome}
    assert {o for o, flags in rows.items() if flags.startswith("yes")} >= {"scheduled", "cancelled", "dispatched"}
    assert rows["invalid"] == "yes | yes" and rows["retried"] == "- | -"


def test_the_docs_name_only_series_that_exist() -> None:
    series = _series()
    not_series = {"ksr_client"}  # the producer library's import name (clients/python)
    unknown = {}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for name in set(re.findall(r"\bksr_[a-z_]+\b", page.read_text())):
            # a prefix such as `ksr_stream_*` names a family of series
            if (
                name not in series
                and name not in not_series
                and not (name.endswith("_") and any(s.startswith(name) for s in series))
            ):
                unknown.setdefault(page.name, []).append(name)
    assert not unknown, f"docs name ksr_ series that runner/metrics.py does not define: {unknown}"
