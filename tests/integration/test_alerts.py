"""The alerts as the chart renders them (no cluster): alerts/rules.yaml is the rendering with
the default values, promtool checks it and runs unit tests on it (every alert fires when it
should and not before, its text says what its value is), the values tune and disable rules,
and every runbook_url leads to a section of docs/runbooks.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import chart

ROOT = Path(__file__).resolve().parents[2]
RULES = chart.CHART / "alerts" / "rules.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool missing (scripts/install-system-deps promtool)", pytrace=False)
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(
            f"promtool {' '.join(args[:2])} exited {done.returncode}\n{done.stdout}\n{done.stderr}", pytrace=False
        )
    return done.stdout


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


def rendered(home: Path, values: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The PrometheusRule's spec `helm template` gives for these prometheusRule values (None: no object)."""
    docs = chart.render(home, namespace="mon", values={"prometheusRule": {"enabled": True, **(values or {})}})
    found = [d for d in docs if d["kind"] == "PrometheusRule"]
    return found[0]["spec"] if found else None


@pytest.fixture(scope="module")
def defaults(home: Path) -> dict[str, Any]:
    spec = rendered(home)
    assert spec is not None
    return spec


def rules_of(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in spec["groups"] for r in g["rules"] if "alert" in r}


def rule_file(directory: Path, spec: dict[str, Any], *, annotations: bool) -> Path:
    """promtool's unit tests compare annotations verbatim: the timing tests run on a copy
    without them, the text tests on the rules as rendered."""
    spec = yaml.safe_load(yaml.safe_dump(spec))
    if not annotations:
        for group in spec["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = directory / f"rules-{'with' if annotations else 'without'}-annotations.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_rule_tests(directory: Path, rules: Path, tests: list[dict[str, Any]]) -> None:
    path = directory / f"{rules.stem}_test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}))
    promtool("test", "rules", str(path))


# -- the file and the chart -------------------------------------------------------------------


def test_the_rule_file_is_the_chart_rendered_with_default_values(defaults: dict[str, Any]) -> None:
    assert yaml.safe_load(RULES.read_text()) == defaults, (
        "charts/kube-stream-runner/alerts/rules.yaml differs from the chart's PrometheusRule; run: scripts/render-alerts"
    )


def test_promtool_checks_the_rendered_rules(defaults: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump(defaults))
    assert "SUCCESS: 13 rules found" in promtool("check", "rules", str(path))
    assert "SUCCESS: 13 rules found" in promtool("check", "rules", str(RULES))


# -- when each alert fires --------------------------------------------------------------------

S = 'namespace="ns", job="ksr"'


def fires(alert: str, at: str, **labels: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels}]}


def quiet(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


NS = {"namespace": "ns", "job": "ksr"}
RULE_TESTS: list[dict[str, Any]] = [
    {  # nobody leads: fires after 2 minutes, not before
        "interval": "1m",
        "input_series": [
            {"series": f'ksr_leader{{{S}, instance="a"}}', "values": "0x10"},
            {"series": f'ksr_leader{{{S}, instance="b"}}', "values": "0x10"},
        ],
        "alert_rule_test": [
            quiet("KsrNoLeader", "1m"),
            fires("KsrNoLeader", "3m", severity="critical", **NS),
            quiet("KsrTwoLeaders", "3m"),
        ],
    },
    {  # every replica's scrape fails (crash loop, all pods stopped): the gauges go stale, up is 0
        "interval": "1m",
        "input_series": [
            {"series": f'ksr_leader{{{S}, instance="a"}}', "values": "1 1 stale"},
            {"series": f'ksr_leader{{{S}, instance="b"}}', "values": "0 0 stale"},
            {"series": f'up{{{S}, instance="a"}}', "values": "1 1 0x10"},
            {"series": f'up{{{S}, instance="b"}}', "values": "1 1 0x10"},
            {"series": 'up{namespace="ns", job="other", instance="c"}', "values": "0x12"},
        ],
        "alert_rule_test": [quiet("KsrNoLeader", "3m"), fires("KsrNoLeader", "5m", severity="critical", **NS)],
    },
    {  # two leaders for more than a minute; a one-scrape overlap does not fire
        "interval": "1m",
        "input_series": [
            {"series": f'ksr_leader{{{S}, instance="a"}}', "values": "1x10"},
            {"series": f'ksr_leader{{{S}, instance="b"}}', "values": "0 1 0 0 0 1 1 1 1 1 1"},
        ],
        "alert_rule_test": [
            quiet("KsrTwoLeaders", "3m"),
            fires("KsrTwoLeaders", "8m", severity="critical", **NS),
            quiet("KsrNoLeader", "8m"),
        ],
    },
    {  # backlog and oldest age: judged on the leader's gauges; a former leader's stale values are ignored
        "interval": "1m",
        "input_series": [
            {"series": f'ksr_leader{{{S}, instance="a"}}', "values": "1x40"},
            {"series": f'ksr_leader{{{S}, instance="b"}}', "values": "0x40"},
            {"series": f'ksr_queue_length{{{S}, instance="a", stream="ksr:jobs:default"}}', "values": "200+10x40"},
            {"series": f'ksr_queue_length{{{S}, instance="b", stream="ksr:jobs:default"}}', "values": "5000x40"},
            {"series": f'ksr_queue_length{{{S}, instance="a", stream="ksr:jobs:low"}}', "values": "0x40"},
            {"series": f'ksr_queue_length{{{S}, instance="b", stream="ksr:jobs:low"}}', "values": "9000+100x40"},
            # the oldest message: 600 s old at 0m, older by 60 s each minute, above 900 s from 6m
            {
                "series": f'ksr_stream_oldest_age_seconds{{{S}, instance="a", stream="ksr:jobs:default"}}',
                "values": "600+60x40",
            },
            {"series": f'ksr_stream_oldest_age_seconds{{{S}, instance="a", stream="ksr:jobs:low"}}', "values": "0x40"},
            {
                "series": f'ksr_stream_oldest_age_seconds{{{S}, instance="b", stream="ksr:jobs:low"}}',
                "values": "86400x40",
            },
        ],
        "alert_rule_test": [
            quiet("KsrBacklogGrowing", "10m"),
            fires("KsrBacklogGrowing", "35m", severity="warning", stream="ksr:jobs:default", **NS),
            quiet("KsrOldestMessageOld", "9m"),  # above since 6m, not yet for 5m
            fires("KsrOldestMessageOld", "12m", severity="warning", stream="ksr:jobs:default", **NS),
        ],
    },
    {  # a failover: the new leader reports the same backlog and dead letters; no step, no alert
        "interval": "1m",
        "input_series": [
            {"series": f'ksr_leader{{{S}, instance="a"}}', "values": "1x15 0x25"},
            {"series": f'ksr_leader{{{S}, instance="b"}}', "values": "0x15 1x25"},
            {"series": f'ksr_queue_length{{{S}, instance="a", stream="s"}}', "values": "500x15 0x25"},
            {"series": f'ksr_queue_length{{{S}, instance="b", stream="s"}}', "values": "0x15 500x25"},
            {"series": f'ksr_stream_dead_letters{{{S}, instance="a", stream="s"}}', "values": "7x15 0x25"},
            {"series": f'ksr_stream_dead_letters{{{S}, instance="b", stream="s"}}', "values": "0x15 7x25"},
        ],
        "alert_rule_test": [
            quiet("KsrDeadLettersIncreasing", "16m"),
            quiet("KsrDeadLettersIncreasing", "20m"),
            quiet("KsrBacklogGrowing", "36m"),
        ],
    },
    {  # dead letters, callbacks given up, 403s, a stuck loop
        "interval": "1m",
        "input_series": [
            {"series": f'ksr_leader{{{S}, instance="a"}}', "values": "1x30"},
            {"series": f'ksr_stream_dead_letters{{{S}, instance="a", stream="s"}}', "values": "0x15 1 2 3x10"},
            {
                "series": f'ksr_callbacks_total{{{S}, instance="a", status="2", outcome="delivered"}}',
                "values": "0+5x30",
            },
            {
                "series": f'ksr_callbacks_total{{{S}, instance="a", status="2", outcome="expired"}}',
                "values": "0x10 1x20",
            },
            {"series": f'ksr_kube_requests_total{{{S}, instance="a", verb="create", code="201"}}', "values": "0+10x30"},
            {
                "series": f'ksr_kube_requests_total{{{S}, instance="a", verb="create", code="403"}}',
                "values": "0x10 1+1x20",
            },
            {
                "series": f'ksr_loop_heartbeat_timestamp_seconds{{{S}, instance="a", loop="main"}}',
                "values": "0+60x5 300x25",
            },
        ],
        "alert_rule_test": [
            quiet("KsrDeadLettersIncreasing", "15m"),
            fires("KsrDeadLettersIncreasing", "19m", severity="warning", stream="s", **NS),
            quiet("KsrCallbacksFailing", "9m"),
            fires("KsrCallbacksFailing", "12m", severity="warning", **NS),
            quiet("KsrKubeApiForbidden", "9m"),
            fires("KsrKubeApiForbidden", "12m", severity="warning", verb="create", **NS),
            quiet("KsrKubeApiErrors", "12m"),
            quiet("KsrLoopHeartbeatStale", "6m"),
            fires("KsrLoopHeartbeatStale", "9m", severity="critical", instance="a", loop="main", **NS),
            quiet("KsrCallbacksRetrying", "12m"),
        ],
    },
    {  # most callback attempts retried; API answers 5xx: both for their `for`, not before
        "interval": "1m",
        "input_series": [
            {
                "series": f'ksr_callbacks_total{{{S}, instance="a", status="0", outcome="delivered"}}',
                "values": "0+1x40",
            },
            {"series": f'ksr_callbacks_total{{{S}, instance="a", status="0", outcome="retry"}}', "values": "0+3x40"},
            {"series": f'ksr_kube_requests_total{{{S}, instance="a", verb="create", code="201"}}', "values": "0+10x40"},
            {"series": f'ksr_kube_requests_total{{{S}, instance="a", verb="create", code="500"}}', "values": "0+1x40"},
        ],
        "alert_rule_test": [
            quiet("KsrCallbacksRetrying", "10m"),
            fires("KsrCallbacksRetrying", "20m", severity="warning", **NS),
            quiet("KsrKubeApiErrors", "6m"),
            fires("KsrKubeApiErrors", "14m", severity="warning", **NS),
            quiet("KsrCallbacksFailing", "20m"),
        ],
    },
    {  # Job failure ratio: a third fail in ns; one failure alone (ns2) and 1 in 11 (ns3) do not alert
        "interval": "1m",
        "input_series": [
            {"series": f'ksr_jobs_finished_total{{{S}, instance="a", outcome="completed"}}', "values": "0+10x60"},
            {"series": f'ksr_jobs_finished_total{{{S}, instance="a", outcome="failed"}}', "values": "0+3x60"},
            {"series": f'ksr_jobs_finished_total{{{S}, instance="a", outcome="exception"}}', "values": "0+2x60"},
            {"series": f'ksr_jobs_finished_total{{{S}, instance="a", outcome="cancelled"}}', "values": "0+50x60"},
            {
                "series": 'ksr_jobs_finished_total{namespace="ns2", job="ksr", instance="c", outcome="completed"}',
                "values": "0x60",
            },
            {
                "series": 'ksr_jobs_finished_total{namespace="ns2", job="ksr", instance="c", outcome="failed"}',
                "values": "0x10 1x50",
            },
            {
                "series": 'ksr_jobs_finished_total{namespace="ns3", job="ksr", instance="d", outcome="completed"}',
                "values": "0+10x60",
            },
            {
                "series": 'ksr_jobs_finished_total{namespace="ns3", job="ksr", instance="d", outcome="failed"}',
                "values": "0+1x60",
            },
        ],
        "alert_rule_test": [
            quiet("KsrJobFailureRatio", "10m"),  # above the ratio, not yet for 15m
            fires("KsrJobFailureRatio", "20m", severity="warning", **NS),
            fires("KsrJobFailureRatio", "50m", severity="warning", **NS),
        ],
    },
    {  # at the cap (ns) for 15m; no cap set (ns2) and below it (ns3) never alert
        "interval": "1m",
        "input_series": [
            {"series": f'ksr_leader{{{S}, instance="a"}}', "values": "1x30"},
            {"series": f'ksr_leader{{{S}, instance="b"}}', "values": "0x30"},
            {"series": f'ksr_active_jobs{{{S}, instance="a"}}', "values": "3 8x29"},
            {"series": f'ksr_max_active_jobs{{{S}, instance="a"}}', "values": "8x30"},
            {"series": f'ksr_active_jobs{{{S}, instance="b"}}', "values": "0x30"},
            {"series": f'ksr_max_active_jobs{{{S}, instance="b"}}', "values": "8x30"},
            {"series": 'ksr_leader{namespace="ns2", job="ksr", instance="c"}', "values": "1x30"},
            {"series": 'ksr_active_jobs{namespace="ns2", job="ksr", instance="c"}', "values": "500x30"},
            {"series": 'ksr_max_active_jobs{namespace="ns2", job="ksr", instance="c"}', "values": "0x30"},
            {"series": 'ksr_leader{namespace="ns3", job="ksr", instance="d"}', "values": "1x30"},
            {"series": 'ksr_active_jobs{namespace="ns3", job="ksr", instance="d"}', "values": "7x30"},
            {"series": 'ksr_max_active_jobs{namespace="ns3", job="ksr", instance="d"}', "values": "8x30"},
        ],
        "alert_rule_test": [
            quiet("KsrActiveJobsAtCap", "10m"),
            fires("KsrActiveJobsAtCap", "20m", severity="warning", **NS),
        ],
    },
    {  # missed ticks: counted by a running pod (a), by a new leader pod born with them (b);
        # misses older than an hour (c) and on-time ticks (d) are quiet
        "interval": "1m",
        "input_series": [
            {
                "series": f'ksr_schedule_ticks_total{{{S}, instance="a", entry="a", outcome="missed"}}',
                "values": "0x80 3x20",
            },
            {
                "series": f'ksr_schedule_ticks_total{{{S}, instance="b", entry="b", outcome="missed"}}',
                "values": "_x70 4x30",
            },
            {
                "series": f'ksr_schedule_ticks_total{{{S}, instance="a", entry="c", outcome="missed"}}',
                "values": "2x100",
            },
            {
                "series": f'ksr_schedule_ticks_total{{{S}, instance="a", entry="d", outcome="missed"}}',
                "values": "0x100",
            },
            {
                "series": f'ksr_schedule_ticks_total{{{S}, instance="a", entry="d", outcome="fired"}}',
                "values": "0+1x100",
            },
        ],
        "alert_rule_test": [
            quiet("KsrScheduleTicksMissed", "65m"),  # c's misses are now more than an hour old
            {
                "eval_time": "75m",
                "alertname": "KsrScheduleTicksMissed",
                "exp_alerts": [{"exp_labels": {"severity": "warning", "entry": "b", **NS}}],
            },
            {
                "eval_time": "85m",
                "alertname": "KsrScheduleTicksMissed",
                "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "entry": "a", **NS}},
                    {"exp_labels": {"severity": "warning", "entry": "b", **NS}},
                ],
            },
        ],
    },
]


def test_every_alert_fires_when_it_should_and_not_before(defaults: dict[str, Any], tmp_path: Path) -> None:
    run_rule_tests(tmp_path, rule_file(tmp_path, defaults, annotations=False), RULE_TESTS)


def test_every_alert_has_a_firing_and_a_quiet_case(defaults: dict[str, Any]) -> None:
    cases = [t for group in RULE_TESTS for t in group["alert_rule_test"]]
    firing = {t["alertname"] for t in cases if t["exp_alerts"]}
    silent = {t["alertname"] for t in cases if not t["exp_alerts"]}
    alerts = set(rules_of(defaults))
    assert len(alerts) == 13
    assert alerts - firing == set() and alerts - silent == set()


# -- what each alert says ---------------------------------------------------------------------

# The default runbookUrl: the page's path in the repository (the project has no public address).
RUNBOOK = "docs/runbooks.md"


def said(alert: str, at: str, labels: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]}


TEXT_TESTS: list[dict[str, Any]] = [
    {
        "interval": "1m",
        "input_series": [
            {"series": f'ksr_leader{{{S}, instance="a"}}', "values": "1x40"},
            {"series": f'ksr_queue_length{{{S}, instance="a", stream="ksr:jobs:default"}}', "values": "200+10x40"},
            {"series": f'ksr_stream_dead_letters{{{S}, instance="a", stream="s"}}', "values": "0x15 1 2 3x10"},
        ],
        "alert_rule_test": [
            said(  # the value is the backlog in messages (it was the deriv() slope, printed as messages)
                "KsrBacklogGrowing",
                "35m",
                {"severity": "warning", "stream": "ksr:jobs:default", **NS},
                summary="The backlog of ksr:jobs:default has grown for 15m",
                description="550 messages of ksr:jobs:default wait (ns), more than 100, and the number has kept "
                "growing for 15m. Producers outrun the runner: look at ksr_active_jobs against KSR_MAX_ACTIVE_JOBS "
                "(backpressure), dispatch latency and Kubernetes API errors.",
                runbook_url=f"{RUNBOOK}#ksrbackloggrowing",
            ),
            said(  # the command it names works (`--stream` is an option; it was an argument: exit 2)
                "KsrDeadLettersIncreasing",
                "19m",
                {"severity": "warning", "stream": "s", **NS},
                summary="Messages of s are being dead-lettered",
                description="s:dead grew by 3 entries in 10 minutes (ns). Inspect them with `ksr dead list "
                "--stream s`, fix the producer or the policy, then `ksr dead replay --stream s DEAD_ID...`.",
                runbook_url=f"{RUNBOOK}#ksrdeadlettersincreasing",
            ),
        ],
    },
]

JOB_SERIES = [
    {"series": f'ksr_jobs_finished_total{{{S}, instance="a", outcome="completed"}}', "values": "0+10x30"},
    {"series": f'ksr_jobs_finished_total{{{S}, instance="a", outcome="failed"}}', "values": "0+3x30"},
    {"series": f'ksr_jobs_finished_total{{{S}, instance="a", outcome="exception"}}', "values": "0+2x30"},
    {"series": f'ksr_stream_oldest_age_seconds{{{S}, instance="a", stream="s"}}', "values": "600+60x30"},
]
TEXT_TESTS.append(
    {
        "interval": "1m",
        "input_series": [{"series": f'ksr_leader{{{S}, instance="a"}}', "values": "1x30"}, *JOB_SERIES],
        "alert_rule_test": [
            said(
                "KsrJobFailureRatio",
                "20m",
                dict(severity="warning", **NS),
                summary="Many Jobs of kube-stream-runner fail",
                description="33.33% of the Jobs of ksr in ns that ended in the last 30 minutes failed (callback 3) "
                "or never ran (99: image, pod start timeout, deleted), above 0.25 for 15m.",
                runbook_url=f"{RUNBOOK}#ksrjobfailureratio",
            ),
            said(
                "KsrOldestMessageOld",
                "12m",
                dict(severity="warning", stream="s", **NS),
                summary="The oldest message of s has waited more than 900 s",
                description="The oldest message of s not yet acked (ns) was added 22m 0s ago: the stream is not "
                "drained (no leader reading, backpressure at KSR_MAX_ACTIVE_JOBS, or an entry that keeps failing).",
                runbook_url=f"{RUNBOOK}#ksroldestmessageold",
            ),
        ],
    }
)


def test_alert_texts_say_what_their_value_is_and_commands_that_work(defaults: dict[str, Any], tmp_path: Path) -> None:
    run_rule_tests(tmp_path, rule_file(tmp_path, defaults, annotations=True), TEXT_TESTS)


# -- the values -------------------------------------------------------------------------------


def test_values_disable_a_rule_and_tune_threshold_for_severity_and_labels(home: Path) -> None:
    spec = rendered(
        home,
        {
            "additionalRuleLabels": {"team": "platform"},
            "runbookUrl": "https://wiki.example/ksr",
            "rules": {
                "KsrBacklogGrowing": {"enabled": False},
                "KsrOldestMessageOld": {"threshold": 1800, "for": "30m", "severity": "page", "labels": {"tier": "1"}},
                "KsrJobFailureRatio": {"threshold": 0.4},
                "KsrDeadLettersIncreasing": {"for": "5m"},
                "KsrNoLeader": {"for": ""},
            },
            "additionalGroups": [
                {"name": "mine", "rules": [{"alert": "Mine", "expr": "vector(1)", "labels": {"x": "{{ $labels.y }}"}}]}
            ],
        },
    )
    assert spec is not None
    rules = rules_of(spec)
    assert "KsrBacklogGrowing" not in rules and len(rules) == 13  # 12 of ours and Mine
    old = rules["KsrOldestMessageOld"]
    assert old["expr"].endswith("> 1800") and "> 900" not in old["expr"]
    assert old["for"] == "30m"
    assert old["labels"] == {"severity": "page", "tier": "1", "team": "platform"}
    assert old["annotations"]["summary"] == "The oldest message of {{ $labels.stream }} has waited more than 1800 s"
    assert old["annotations"]["runbook_url"] == "https://wiki.example/ksr#ksroldestmessageold"
    assert "> 0.4\n" in rules["KsrJobFailureRatio"]["expr"]
    assert "above 0.4 for 15m" in rules["KsrJobFailureRatio"]["annotations"]["description"]
    assert rules["KsrDeadLettersIncreasing"]["for"] == "5m"
    assert "for" not in rules["KsrNoLeader"]
    assert rules["KsrNoLeader"]["annotations"]["summary"] == "No kube-stream-runner replica has led for 0s"
    assert rules["KsrTwoLeaders"]["labels"] == {"severity": "critical", "team": "platform"}
    assert spec["groups"][-1] == {
        "name": "mine",
        "rules": [{"alert": "Mine", "expr": "vector(1)", "labels": {"x": "{{ $labels.y }}"}}],
    }


def test_a_large_threshold_is_written_as_a_whole_number(home: Path) -> None:
    spec = rendered(home, {"rules": {"KsrBacklogGrowing": {"threshold": 2000000}}})
    assert spec is not None
    assert "> 2000000\n" in rules_of(spec)["KsrBacklogGrowing"]["expr"]  # not 2e+06


def test_every_rule_off_renders_no_prometheusrule(home: Path, defaults: dict[str, Any]) -> None:
    assert rendered(home, {"rules": {name: {"enabled": False} for name in rules_of(defaults)}}) is None


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"rules": {"KsrBacklogGrowin": {"threshold": 5}}}, "KsrBacklogGrowin"),
        ({"rules": {"KsrBacklogGrowing": {"for": "15 minutes"}}}, "/prometheusRule/rules/KsrBacklogGrowing/for"),
        ({"rules": {"KsrBacklogGrowing": {"threshold": "many"}}}, "/prometheusRule/rules/KsrBacklogGrowing/threshold"),
        ({"rules": {"KsrNoLeader": {"threshold": 1}}}, "threshold"),  # it compares with none
        (
            {"rules": {"KsrBacklogGrowing": {"threshold": None}}},
            "prometheusRule.rules.KsrBacklogGrowing.threshold: required",
        ),
        ({"rules": {"KsrBacklogGrowing": {"severity": ""}}}, "/prometheusRule/rules/KsrBacklogGrowing/severity"),
        ({"additionalGroups": [{"rules": []}]}, "name"),
        ({"runbookUrl": ""}, "/prometheusRule/runbookUrl"),
    ],
)
def test_bad_rule_values_are_refused_naming_the_value(home: Path, values: dict[str, Any], refusal: str) -> None:
    with pytest.raises(AssertionError) as failed:
        rendered(home, values)
    assert refusal in str(failed.value)


# -- runbooks ---------------------------------------------------------------------------------


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def _sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^## +(.+?) *$", markdown, flags=re.M)
    return {
        re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-"): body for title, body in zip(parts[1::2], parts[2::2])
    }


def test_every_runbook_url_leads_to_a_section_with_a_ksr_command(defaults: dict[str, Any]) -> None:
    text = RUNBOOKS.read_text()
    anchors, sections = _anchors(text), _sections(text)
    for name, rule in rules_of(defaults).items():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK + "#"), (name, url)
        anchor = url.split("#", 1)[1]
        assert anchor in anchors, f"{name}: {url} has no heading in docs/runbooks.md"
        blocks = re.findall(r"^```sh runnable\n(.*?)^```", sections[anchor], re.M | re.S)
        commands = [line for block in blocks for line in block.splitlines() if line.startswith("ksr ")]
        assert commands, f"{name}: its runbook section has no runnable ksr command"
