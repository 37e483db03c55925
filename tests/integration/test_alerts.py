"""The alerts as the chart renders them (no cluster): alerts/rules.yaml is the rendering with
the default values, promtool checks it and runs unit tests on it (every alert fires when it
should and not before, its text says what its value is), the values tune and disable rules,
and every runbook_url leads to a section of docs/runbooks.md."""

from __future__ import annotations

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


S = 'namespace="ns", job="ksr"'
NS = {"namespace": "ns", "job": "ksr"}


# -- what each alert says ---------------------------------------------------------------------

RUNBOOK = "https://github.com/example/kube-stream-runner/blob/main/docs/runbooks.md"


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


def test_alert_texts_say_what_their_value_is_and_commands_that_work(defaults: dict[str, Any], tmp_path: Path) -> None:
    run_rule_tests(tmp_path, rule_file(tmp_path, defaults, annotations=True), TEXT_TESTS)
