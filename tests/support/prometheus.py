"""A real Prometheus server (Debian's `prometheus`) on loopback: a generated scrape config
for static targets, a rule file, and its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from runner.process.children import stop_child
from tests.support.ports import free_port, wait_for


class Prometheus:
    def __init__(
        self,
        directory: Path,
        *,
        targets: Sequence[str] | Mapping[str, Mapping[str, str]],
        labels: dict[str, str],
        job: str,
        rules: Path,
        interval: str = "1s",
    ) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus missing (make test installs Debian's prometheus package)"
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.config_file = directory / "prometheus.yml"
        self._config = {"job": job, "labels": labels, "rules": str(rules), "interval": interval}
        self._write_config(targets)
        self.log = open(directory / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_for(lambda: self._get("/-/ready", raw=True), timeout=60, what="prometheus ready")

    def _write_config(self, targets: Sequence[str] | Mapping[str, Mapping[str, str]]) -> None:
        """`targets`: addresses, or addresses with their own target labels (a `pod`, say, as
        a ServiceMonitor's relabelling gives each)."""
        c = self._config
        if isinstance(targets, Mapping):
            static = [{"targets": [t], "labels": {**c["labels"], **own}} for t, own in targets.items()]
        else:
            static = [{"targets": list(targets), "labels": c["labels"]}]
        config = {
            "global": {"scrape_interval": c["interval"], "evaluation_interval": c["interval"]},
            "rule_files": [c["rules"]],
            "scrape_configs": [
                {
                    "job_name": c["job"],
                    "metrics_path": "/metrics",
                    "static_configs": static,
                }
            ],
        }
        self.config_file.write_text(yaml.safe_dump(config))

    def set_targets(self, targets: Sequence[str] | Mapping[str, Mapping[str, str]]) -> None:
        """Rewrite the scrape config and reload it (a replaced pod has a new address)."""
        self._write_config(targets)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass
        wanted = set(targets)
        wait_for(lambda: {t["labels"]["instance"] for t in self.targets()} == wanted, timeout=30, what="new targets")

    def _get(self, path: str, raw: bool = False, **params: Any) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
        if raw:
            return body or b"ok"
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (now, or at Unix time `at`): its series (vector) or [] when it returns nothing."""
        data = self._get("/api/v1/query", query=expr, **({} if at is None else {"time": f"{at:.3f}"}))
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, *, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """The range query's raw series: `metric` (labels) and `values` ([time, value] pairs)."""
        data = self._get("/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets")["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        return [r for g in self._get("/api/v1/rules")["groups"] for r in g["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["alerts"])

    def close(self) -> None:
        stop_child(self.proc, grace=20)
        self.log.close()
