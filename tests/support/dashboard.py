"""The chart's Grafana dashboard for the tests: its generator, and every query it holds
(panels, annotations, variables) with where it sits."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.support.chart import CHART

DASHBOARD = CHART / "dashboards" / "kube-stream-runner.json"
GENERATOR = CHART / "dashboards" / "generate.py"


def generator() -> ModuleType:
    """charts/kube-stream-runner/dashboards/generate.py as a module (it is no package)."""
    spec = importlib.util.spec_from_file_location("ksr_dashboard_generator", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


@dataclass(frozen=True)
class Query:
    where: str  # "panel 3 'Backlog' A", "annotation 'Leader changes'", "variable job"
    title: str
    expr: str
    kind: str  # panel | annotation | variable
    panel: dict[str, Any] | None = None
    legend: str = ""

    @property
    def unit(self) -> str | None:
        return None if self.panel is None else self.panel.get("fieldConfig", {}).get("defaults", {}).get("unit")


def queries(doc: dict[str, Any] | None = None) -> list[Query]:
    doc = doc if doc is not None else load()
    found: list[Query] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for t in panel.get("targets", []):
                if t.get("expr"):
                    where = f"panel {panel.get('id')} {panel.get('title')!r} {t.get('refId')}"
                    found.append(Query(where, panel["title"], t["expr"], "panel", panel, t.get("legendFormat", "")))
            walk(panel.get("panels", []))

    walk(doc["panels"])
    for a in doc["annotations"]["list"]:
        if a.get("expr"):
            where = f"annotation {a['name']!r}"
            found.append(Query(where, a["name"], a["expr"], "annotation", legend=a.get("titleFormat", "")))
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            expr = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
            found.append(Query(f"variable {var['name']}", var["name"], expr, "variable"))
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variables replaced by what Grafana would put there."""
    for name in sorted(variables, key=len, reverse=True):  # $__rate_interval before $__range
        expr = expr.replace(name, variables[name])
    assert "$" not in expr, f"variable left in {expr}"
    return expr
