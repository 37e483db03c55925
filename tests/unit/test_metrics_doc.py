"""docs/metrics.md is generated from runner/metrics.py and lists every fixed label value; the
docs name only series that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from runner import metrics_doc
from runner.lifecycle import CallbackStatus, DispatchOutcome
from runner.metrics import (
    CALLBACK_OUTCOMES,
    FIXED_LABELS,
    TICK_OUTCOME_MEANING,
    Metrics,
)
from runner.signals import TICK_OUTCOMES

DOC = metrics_doc.DOC_PATH
ROOT = Path(__file__).resolve().parents[2]


def test_the_metrics_doc_is_generated_from_the_code() -> None:
    documented = metrics_doc.current_tables(DOC.read_text())
    assert documented == metrics_doc.render_tables(), (
        "docs/metrics.md differs from runner/metrics.py; run: python -m runner.metrics_doc --write"
    )


def test_every_exposed_series_is_documented() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    names = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    text = DOC.read_text()
    assert {"ksr_stream_oldest_age_seconds", "ksr_max_active_jobs", "ksr_messages_total"} <= names
    missing = {n for n in names if f"`{n}" not in text}
    assert not missing


def test_every_outcome_is_listed_with_the_sums_it_feeds() -> None:
    text = DOC.read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (yes|-) \| (?:yes|-) \|", text, re.M))
    assert list(rows) == [o.value for o in DispatchOutcome]
    assert {o for o, processed in rows.items() if processed == "yes"} == {
        "dispatched",
        "duplicate",
        "invalid",
        "dead_lettered",
        "scheduled",
        "cancelled",
    }
    assert (
        "`ksr_messages_processed_total` is the sum of the outcomes `dispatched`, `duplicate`, `invalid`, "
        "`dead_lettered`, `scheduled`, `cancelled`;" in text
    )


def test_fixed_label_links_resolve_to_sections() -> None:
    text = DOC.read_text()
    headings = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)
    }
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) == sum(len(labels) for labels in FIXED_LABELS.values())
    assert set(links) <= headings


def test_fixed_sets_agree_with_their_sources() -> None:
    assert tuple(TICK_OUTCOME_MEANING) == TICK_OUTCOMES
    assert FIXED_LABELS["ksr_callbacks"]["status"] == tuple(str(int(s)) for s in CallbackStatus)
    assert FIXED_LABELS["ksr_callbacks"]["outcome"] == CALLBACK_OUTCOMES


def test_counters_of_fixed_labels_start_at_zero_and_unknown_values_fail() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    assert registry.get_sample_value("ksr_messages_total", {"outcome": "cancelled"}) == 0
    assert registry.get_sample_value("ksr_callbacks_total", {"status": "99", "outcome": "expired"}) == 0
    assert registry.get_sample_value("ksr_cancellations_total", {"stage": "pending"}) == 0
    m.count_callback(2, "delivered")
    assert registry.get_sample_value("ksr_callbacks_total", {"status": "2", "outcome": "delivered"}) == 1
    with pytest.raises(ValueError, match="unknown callback outcome 'deliverd'"):
        m.count_callback(2, "deliverd")


def test_a_services_job_outcomes_exist_from_its_first_dispatch() -> None:
    from runner.metrics import MetricsObserver
    from runner.signals import Dispatched

    registry = CollectorRegistry()
    m = Metrics(registry)
    labels = {"job_service": "billing", "job_namespace": "jobs"}
    assert registry.get_sample_value("ksr_jobs_finished_total", {"outcome": "failed", **labels}) is None
    MetricsObserver(lambda: m)(Dispatched(0.1, service="billing", namespace="jobs"))
    outcomes = {
        o: registry.get_sample_value("ksr_jobs_finished_total", {"outcome": o, **labels})
        for o in FIXED_LABELS["ksr_jobs_finished"]["outcome"]
    }
    assert outcomes == {"completed": 0, "failed": 0, "exception": 0, "cancelled": 0}


def test_a_schedules_series_exist_before_its_first_tick() -> None:
    from runner.metrics import MetricsObserver
    from runner.signals import ScheduleTick

    registry = CollectorRegistry()
    m = Metrics(registry)
    MetricsObserver(lambda: m)(ScheduleTick("nightly", "missed", 0))
    ticks = {
        o: registry.get_sample_value("ksr_schedule_ticks_total", {"entry": "nightly", "outcome": o})
        for o in TICK_OUTCOMES
    }
    assert ticks == {"fired": 0, "caught_up": 0, "missed": 0, "refused": 0}


def test_active_jobs_carries_the_cap() -> None:
    from runner.metrics import MetricsObserver
    from runner.signals import ActiveJobs

    registry = CollectorRegistry()
    m = Metrics(registry)
    MetricsObserver(lambda: m)(ActiveJobs(7, cap=8))
    assert registry.get_sample_value("ksr_active_jobs") == 7
    assert registry.get_sample_value("ksr_max_active_jobs") == 8


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
