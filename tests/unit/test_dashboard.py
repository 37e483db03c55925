"""The chart's Grafana dashboard is its generator's output, and what it shows is labelled the
way an operator reads it: units by what each query returns, legends by pod, the rows and
panels issue 21 asked for. (Its queries against a real Prometheus: tests/e2e/test_prometheus.py;
valid PromQL over defined metrics: tests/integration/test_chart.py.)"""

from __future__ import annotations

import re

import pytest

from tests.support import dashboard
from tests.support.dashboard import Query

GENERATED = dashboard.generator()
DOC = GENERATED.build()
PANEL_QUERIES = [q for q in dashboard.queries(DOC) if q.kind == "panel"]


def test_the_committed_json_is_the_generators_output():
    committed = dashboard.DASHBOARD.read_text()
    assert committed == GENERATED.render(), (
        f"{dashboard.DASHBOARD.relative_to(dashboard.CHART.parents[1])} differs from its generator: "
        f"run `{GENERATED.COMMAND}` and commit the result"
    )


def test_check_mode_names_the_command_when_the_json_drifted(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "kube-stream-runner.json"
    stale.write_text(GENERATED.render().replace('"Backlog"', '"Backlog (edited by hand)"'))
    monkeypatch.setattr(GENERATED, "OUTPUT", stale)
    assert GENERATED.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "run `make dashboard`" in err and "Backlog (edited by hand)" in err
    stale.write_text(GENERATED.render())
    assert GENERATED.main(["--check"]) == 0


RATE_UNITS = {"ops", "mps", "reqps"}  # per second: Jobs, messages, HTTP requests


def expected_units(q: Query) -> set[str]:
    """What the query returns decides its unit."""
    expr = q.expr
    if "histogram_quantile" in expr or "_seconds_sum" in expr or expr.startswith("time() -"):
        return {"s"}
    if q.title == "ETA to drain":
        return {"s"}
    if "increase(" in expr and " / " in expr:
        return {"percentunit"}  # a ratio of two counts
    if "rate(" in expr:
        return RATE_UNITS
    return {"short", "none"}  # a gauge or an increase(): a count, never "ops"


@pytest.mark.parametrize("q", PANEL_QUERIES, ids=lambda q: q.where)
def test_each_panel_has_the_unit_its_query_returns(q: Query):
    assert q.unit in expected_units(q), f"{q.where}: unit {q.unit!r} for {q.expr}"


def test_units_called_out_in_the_issue():
    by_title = {q.title: q for q in PANEL_QUERIES}
    assert by_title["Delayed messages waiting"].unit == "short"  # a gauge, was "ops"
    for title in ("Schedule ticks by entry and outcome", "Cancellations by stage", "Consumer groups recreated"):
        assert "increase(" in by_title[title].expr and by_title[title].unit == "short", title
    assert by_title["Messages by outcome"].unit == "mps"
    assert by_title["Requests by verb and code"].unit == "reqps"
    assert by_title["Job duration"].unit == "s"


def test_legends_name_the_pod_never_the_instance():
    legends = {q.where: q.legend for q in PANEL_QUERIES}
    assert not [w for w, legend in legends.items() if "instance" in legend]
    per_pod = {q.title for q in PANEL_QUERIES if "{{pod}}" in q.legend}
    assert per_pod >= {"Leader", "Leader by pod", "Loop heartbeat age"}
    assert DOC["annotations"]["list"][0]["titleFormat"] == "Leader: {{pod}}"


def test_rows_stats_annotation_and_variables():
    rows = [p["title"] for p in DOC["panels"] if p["type"] == "row"]
    assert rows == [
        "Overview",
        "Leadership",
        "Streams (from the leader)",
        "Messages",
        "Jobs",
        "Kubernetes API",
        "Callbacks and health",
        "Scheduling",
    ]
    stats = {p["title"] for p in DOC["panels"] if p["type"] == "stat"}
    assert stats >= {"Leader", "Backlog", "ETA to drain", "Failed Jobs", "Dead letters", "Active Jobs"}
    (annotation,) = DOC["annotations"]["list"]
    assert annotation["name"] == "Leader changes" and "ksr_leader" in annotation["expr"]
    assert annotation["datasource"]["uid"] == "${datasource}"
    variables = {v["name"]: v["type"] for v in DOC["templating"]["list"]}
    assert variables == {"datasource": "datasource", "namespace": "query", "job": "query"}
    for p in DOC["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert re.search(r'namespace=~"\$namespace", job=~"\$job"', p["targets"][0]["expr"]), p["title"]


def test_job_outcomes_are_broken_down_by_service_and_namespace():
    breakdown = [q for q in PANEL_QUERIES if "job_service" in q.expr]
    assert {q.title for q in breakdown} == {"Failed Jobs by service", "Job outcomes by service (in range)"}
    for q in breakdown:
        assert "sum by (job_service, job_namespace" in q.expr, q.where


def test_panel_ids_are_unique_and_the_grid_does_not_overlap():
    panels = DOC["panels"]
    assert [p["id"] for p in panels] == list(range(1, len(panels) + 1))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
