"""`ksr health`: the probes of a running replica, exit 0/1 (for exec probes and people)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

import click

from runner.cli._context import cli_context, fail, json_option
from runner.cli._output import emit_json

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 3.0


# -- health ---------------------------------------------------------------------------------------


def _get(url: str) -> tuple[int | None, dict[str, Any], str | None]:
    """(HTTP status, JSON body, transport error)."""
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT) as response:
            return response.status, _json(response.read()), None
    except urllib.error.HTTPError as e:
        return e.code, _json(e.read()), None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ConnectionRefusedError):
            return None, {}, "connection refused"
        return None, {}, str(reason)
    except (TimeoutError, OSError) as e:
        return None, {}, "timed out" if isinstance(e, TimeoutError) else str(e)


def _json(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def probe_health(base_url: str, probes: tuple[str, ...] = ("healthz", "readyz")) -> dict[str, Any]:
    """Query the replica's probes; healthy when each answers 200."""
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    for probe in probes:
        url = f"{base_url.rstrip('/')}/{probe}"
        code, body, error = _get(url)
        ok = code == 200
        checks[probe] = {"ok": ok, "status": code, "error": error}
        if error is not None:
            reasons.append(f"{probe}: {error} at {url}")
        elif not ok:
            given = [str(r) for r in body.get("reasons", [])] or [f"HTTP {code}"]
            reasons.extend(f"{probe}: {r}" for r in given)
    return {"healthy": not reasons, "url": base_url, "checks": checks, "reasons": reasons}


@click.command()
@click.option(
    "--url",
    metavar="URL",
    default=None,
    help="Base URL of the replica's probes; default http://127.0.0.1:$HTTP_SERVER_PORT.",
)
@click.option(
    "--probe",
    type=click.Choice(["all", "live", "ready"]),
    default="all",
    show_default=True,
    help="live: /healthz only (liveness); ready: /readyz only.",
)
@json_option
def health(url: str | None, probe: str, as_json: bool) -> None:
    """Exit 0 when this replica is healthy, 1 when not.

    Healthy: /healthz and /readyz answer 200.
    For exec probes and compose health checks; prints the reasons when unhealthy.
    """
    if url is None:
        url = f"http://127.0.0.1:{cli_context().settings().server.http_port}"
    probes = {"all": ("healthz", "readyz"), "live": ("healthz",), "ready": ("readyz",)}[probe]
    result = probe_health(url, probes)
    if as_json:
        emit_json(result)
    elif result["healthy"]:
        click.echo(f"healthy ({url})")
    else:
        for reason in result["reasons"]:
            click.echo(f"unhealthy: {reason}", err=True)
    if not result["healthy"]:
        fail(
            f"replica at {url} is unhealthy: {len(result['reasons'])} {'reason' if len(result['reasons']) == 1 else 'reasons'}"
        )
