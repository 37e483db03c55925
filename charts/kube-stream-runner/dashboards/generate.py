"""The chart's Grafana dashboard, built with Grafana's own foundation SDK (its builders are
generated from Grafana's schemas, so a field it has is a field Grafana reads).

    make dashboard                                                   # write kube-stream-runner.json
    .venv/bin/python charts/kube-stream-runner/dashboards/generate.py --check   # exit 1 if it drifted

The JSON beside this file is its output, committed for the chart's ConfigMap and for people
who import it by hand; tests/unit/test_dashboard.py fails when the two differ.

Labels: `namespace`, `job` and `pod` are the target labels a ServiceMonitor's scrape gives
(so legends name the pod, never `instance`, an IP:port). The leader-only gauges are read from
the leader alone (`and on (job, instance) (ksr_leader == 1)`): former leaders zero theirs.
Units: gauges and increase() counts `short`, rates per second, durations `s`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

OUTPUT = Path(__file__).resolve().with_name("kube-stream-runner.json")
COMMAND = "make dashboard"

DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'namespace=~"$namespace", job=~"$job"'
LEADER = f"ksr_leader{{{SEL}}} == 1"
FAILED = 'outcome=~"failed|exception"'


def on_leader(expr: str) -> str:
    """`expr` from the leading replica only."""
    return f"{expr} and on (job, instance) ({LEADER})"


def m(name: str, extra: str = "") -> str:
    """`name` with the dashboard's selector (and `extra` matchers)."""
    return f"{name}{{{SEL}{', ' + extra if extra else ''}}}"


def rate(name: str, extra: str = "", window: str = "$__rate_interval") -> str:
    return f"rate({m(name, extra)}[{window}])"


def increase(name: str, extra: str = "", window: str = "$__rate_interval") -> str:
    return f"increase({m(name, extra)}[{window}])"


def quantile(q: float, name: str, by: str = "") -> str:
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(name)}))"


BACKLOG = f"sum({on_leader(m('ksr_queue_length'))})"
DRAINED = f"sum({rate('ksr_messages_processed_total', window='5m')})"

# -- panels ----------------------------------------------------------------------------------


def target(expr: str, legend: str, ref: str = "A", *, instant: bool = False, fmt: str = "") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)
    if instant:
        q = q.instant()
    else:
        q = q.range()
    if fmt == "table":
        q = q.format(pm.PromQueryFormat.TABLE)
    return q


def targets(queries: list[tuple[str, str]], **kw: Any) -> list[Builder[Any]]:
    return [target(expr, legend, chr(ord("A") + i), **kw) for i, (expr, legend) in enumerate(queries)]


def graph(
    title: str, unit: str, queries: list[tuple[str, str]], *, description: str = "", w: int = 8, h: int = 8
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .datasource(DS)
        .unit(unit)
        .min(0)
        .targets(targets(queries))
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
        .span(w)
        .height(h)
    )
    return p.description(description) if description else p


def single(
    title: str,
    unit: str,
    expr: str,
    legend: str,
    *,
    description: str,
    no_value: str = "",
    steps: list[tuple[float | None, str]] | None = None,
    text_mode: common.BigValueTextMode = common.BigValueTextMode.AUTO,
    w: int = 4,
) -> stat.Panel:
    thresholds = db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
    thresholds = thresholds.steps([dm.Threshold(value=v, color=c) for v, c in (steps or [(None, "green")])])
    p = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .targets([target(expr, legend, instant=True)])
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .text_mode(text_mode)
        .thresholds(thresholds)
        .span(w)
        .height(4)
    )
    return p.no_value(no_value) if no_value else p


# -- rows ------------------------------------------------------------------------------------


def overview() -> list[Builder[Any]]:
    return [
        single(
            "Leader",
            units.NoUnit,
            LEADER,
            "{{pod}}",
            description="The pod holding the Lease.",
            no_value="no leader",
            text_mode=common.BigValueTextMode.NAME,
            steps=[(None, "green")],
        ),
        single(
            "Backlog",
            units.Short,
            BACKLOG,
            "messages",
            description="Messages still to be handled on every stream: lag + pending (from the leader).",
            steps=[(None, "green"), (1000, "orange"), (10000, "red")],
        ),
        single(
            "ETA to drain",
            units.Seconds,
            f"({BACKLOG} / ({DRAINED} > 0)) or ({BACKLOG} == 0)",
            "eta",
            description="Backlog / messages processed per second over the last 5 minutes. "
            "No value: a backlog and nothing processed.",
            no_value="not draining",
            steps=[(None, "green"), (600, "orange"), (3600, "red")],
        ),
        single(
            "Failed Jobs",
            units.PercentUnit,
            f"sum({increase('ksr_jobs_finished_total', FAILED, '$__range')})"
            f" / sum({increase('ksr_jobs_finished_total', window='$__range')})",
            "failed",
            description="Failed or exception (99) among the Jobs that ended in the dashboard's range.",
            no_value="no Job ended",
            steps=[(None, "green"), (0.05, "orange"), (0.2, "red")],
        ),
        single(
            "Dead letters",
            units.Short,
            f"sum({on_leader(m('ksr_stream_dead_letters'))})",
            "dead",
            description="Entries in the dead-letter streams (`ksr dead list`).",
            steps=[(None, "green"), (1, "orange")],
        ),
        single(
            "Active Jobs",
            units.Short,
            f"max({on_leader(m('ksr_active_jobs'))})",
            "active",
            description="Jobs created and not yet finished.",
        ),
    ]


def leadership() -> list[Builder[Any]]:
    return [
        single(
            "Replicas leading",
            units.Short,
            f"sum({m('ksr_leader')})",
            "leaders",
            description="Exactly 1 is healthy.",
            steps=[(None, "red"), (1, "green"), (2, "red")],
            w=6,
        ),
        single(
            "Leader transitions",
            units.Short,
            f"max({increase('ksr_leader_transitions_total', window='$__range')})",
            "in range",
            description="New leader or new term in the dashboard's range, as the replica that saw most counts it.",
            steps=[(None, "green"), (3, "orange")],
            w=6,
        ),
        graph("Leader by pod", units.NoUnit, [(m("ksr_leader"), "{{pod}}")], w=12, h=4),
    ]


def streams() -> list[Builder[Any]]:
    def per_stream(title: str, metric: str, description: str) -> timeseries.Panel:
        return graph(
            title,
            units.Short,
            [(f"max by (stream) ({on_leader(m(metric))})", "{{stream}}")],
            description=description,
            w=8 if metric != "ksr_queue_length" else 16,
        )

    return [
        per_stream("Stream length", "ksr_stream_length", "XLEN of each stream."),
        per_stream("Pending", "ksr_stream_pending", "Delivered to the group and not acked."),
        per_stream("Lag", "ksr_stream_lag", "Not yet delivered to the group."),
        per_stream("Dead letters per stream", "ksr_stream_dead_letters", "Length of `<stream>:dead`."),
        per_stream("Still to handle (lag + pending)", "ksr_queue_length", "The backlog, per stream."),
    ]


def messages() -> list[Builder[Any]]:
    return [
        graph(
            "Messages by outcome",
            units.MessagesPerSecond,
            [(f"sum by (outcome) ({rate('ksr_messages_total')})", "{{outcome}}")],
        ),
        graph(
            "Processed / failed",
            units.MessagesPerSecond,
            [
                (f"sum({rate('ksr_messages_processed_total')})", "processed"),
                (f"sum({rate('ksr_messages_failed_total')})", "failed (no Job)"),
            ],
        ),
        graph(
            "Dispatch latency",
            units.Seconds,
            [
                (quantile(0.5, "ksr_dispatch_latency_seconds_bucket"), "p50"),
                (quantile(0.99, "ksr_dispatch_latency_seconds_bucket"), "p99"),
            ],
            description="From the entry id's time to the Job created.",
        ),
    ]


def jobs() -> list[Builder[Any]]:
    by = "job_service, job_namespace"
    return [
        graph("Active Jobs over time", units.Short, [(f"max({on_leader(m('ksr_active_jobs'))})", "active")]),
        graph(
            "Finished Jobs by outcome",
            units.OpsPerSecond,
            [(f"sum by (outcome) ({rate('ksr_jobs_finished_total')})", "{{outcome}}")],
        ),
        graph(
            "Job duration",
            units.Seconds,
            [
                (quantile(0.5, "ksr_job_duration_seconds_bucket"), "p50"),
                (quantile(0.99, "ksr_job_duration_seconds_bucket"), "p99"),
                (
                    f"sum({rate('ksr_job_duration_seconds_sum')}) / sum({rate('ksr_job_duration_seconds_count')})",
                    "mean",
                ),
            ],
        ),
        graph(
            "Failed Jobs by service",
            units.Short,
            [(f"sum by ({by}) ({increase('ksr_jobs_finished_total', FAILED)})", "{{job_service}} ({{job_namespace}})")],
            description="Failed or exception (99), per interval, by the message's service and the Job's namespace "
            "(the first KSR_METRICS_MAX_LABEL_VALUES of each; the rest is `other`).",
            w=12,
        ),
        table.Panel()
        .title("Job outcomes by service (in range)")
        .description("Jobs that ended in the dashboard's range, by service, namespace and outcome.")
        .datasource(DS)
        .unit(units.Short)
        .targets(
            [
                target(
                    f"sum by ({by}, outcome) ({increase('ksr_jobs_finished_total', window='$__range')})",
                    "",
                    instant=True,
                    fmt="table",
                )
            ]
        )
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": {"Value": "Jobs"}}
            )
        )
        .span(12)
        .height(8),
    ]


def kubernetes_api() -> list[Builder[Any]]:
    return [
        graph(
            "Requests by verb and code",
            units.RequestsPerSecond,
            [(f"sum by (verb, code) ({rate('ksr_kube_requests_total')})", "{{verb}} {{code}}")],
            w=12,
        ),
        graph(
            "Request latency by verb",
            units.Seconds,
            [
                (quantile(0.99, "ksr_kube_request_duration_seconds_bucket", "verb"), "{{verb}} p99"),
                (quantile(0.5, "ksr_kube_request_duration_seconds_bucket", "verb"), "{{verb}} p50"),
            ],
            w=12,
        ),
    ]


def callbacks_and_health() -> list[Builder[Any]]:
    return [
        graph(
            "Callbacks by outcome",
            units.RequestsPerSecond,
            [(f"sum by (outcome) ({rate('ksr_callbacks_total')})", "{{outcome}}")],
            description="Webhook attempts (every replica's RQ worker sends).",
            w=6,
        ),
        graph(
            "Callbacks by status",
            units.RequestsPerSecond,
            [(f"sum by (status) ({rate('ksr_callbacks_total')})", "status {{status}}")],
            w=6,
        ),
        graph(
            "Loop heartbeat age",
            units.Seconds,
            [
                (
                    f"time() - max by (namespace, job, instance, pod, loop) ({m('ksr_loop_heartbeat_timestamp_seconds')})",
                    "{{pod}} {{loop}}",
                )
            ],
            description="Liveness fails past KSR_STUCK_THRESHOLD (60 s by default).",
            w=6,
        ),
        graph(
            "Consumer groups recreated",
            units.Short,
            [(f"sum by (stream) ({increase('ksr_redis_group_recreated_total')})", "{{stream}}")],
            description="A stream or group vanished (Redis restarted without persistence) and was recreated.",
            w=6,
        ),
    ]


def scheduling() -> list[Builder[Any]]:
    return [
        graph(
            "Delayed messages waiting",
            units.Short,
            [(f"max({on_leader(m('ksr_scheduled_waiting'))})", "waiting")],
            description="Held until their runAt / delaySeconds.",
            w=6,
        ),
        graph(
            "Moved to their stream",
            units.MessagesPerSecond,
            [(f"sum by (stream) ({rate('ksr_scheduled_moved_total')})", "{{stream}}")],
            w=6,
        ),
        graph(
            "Schedule ticks by entry and outcome",
            units.Short,
            [(f"sum by (entry, outcome) ({increase('ksr_schedule_ticks_total')})", "{{entry}} {{outcome}}")],
            description="Recurring schedules: fired, missed, caught_up, refused, per interval.",
            w=6,
        ),
        graph(
            "Cancellations by stage",
            units.Short,
            [(f"sum by (stage) ({increase('ksr_cancellations_total')})", "{{stage}}")],
            w=6,
        ),
    ]


ROWS = (
    ("Overview", overview),
    ("Leadership", leadership),
    ("Streams (from the leader)", streams),
    ("Messages", messages),
    ("Jobs", jobs),
    ("Kubernetes API", kubernetes_api),
    ("Callbacks and health", callbacks_and_health),
    ("Scheduling", scheduling),
)

# -- the dashboard ---------------------------------------------------------------------------


def variables() -> list[Builder[dm.VariableModel]]:
    def query(name: str, label: str, expr: str) -> db.QueryVariable:
        return (
            db.QueryVariable(name)
            .label(label)
            .datasource(DS)
            .query(expr)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )

    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        query("namespace", "Namespace", "label_values(ksr_leader, namespace)"),
        query("job", "Job (scrape)", 'label_values(ksr_leader{namespace=~"$namespace"}, job)'),
    ]


# A replica that went from follower to leader within the step: Grafana's Prometheus
# annotations evaluate it every `step` and mark each point with its pod.
LEADER_CHANGE = f"({LEADER}) and changes({m('ksr_leader')}[1m]) > 0"
# What the SDK's AnnotationQuery does not model (its schema says "TODO"): Prometheus's own
# annotation fields, read by Grafana's Prometheus data source.
ANNOTATION_EXTRA = {"step": "60s", "titleFormat": "Leader: {{pod}}", "textFormat": "", "tagKeys": "namespace,job"}


def build() -> dict[str, Any]:
    """The dashboard as JSON-ready data."""
    d = (
        db.Dashboard("kube-stream-runner")
        .uid("kube-stream-runner")
        .description(
            "Redis Streams to Kubernetes Jobs: backlog, leadership, streams, messages, Jobs by service, "
            "Kubernetes API, callbacks, scheduling."
        )
        .tags(["kube-stream-runner"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        .variables(variables())
        .annotation(
            db.AnnotationQuery()
            .name("Leader changes")
            .datasource(DS)
            .enable(True)
            .icon_color("orange")
            .expr(LEADER_CHANGE)
        )
    )
    for title, panels in ROWS:
        d = d.with_row(db.Row(title))
        for panel in panels():
            d = d.with_panel(panel)
    doc: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    for annotation in doc["annotations"]["list"]:
        annotation.update(ANNOTATION_EXTRA)
    for n, panel in enumerate(doc["panels"], start=1):  # the SDK leaves ids to us
        panel["id"] = n
    return doc


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    args = parser.parse_args(argv)
    wanted = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != wanted:
            diff = difflib.unified_diff(
                current.splitlines(), wanted.splitlines(), "committed", "generated", lineterm=""
            )
            print("\n".join(list(diff)[:80]), file=sys.stderr)
            print(f"{OUTPUT.name} is not the generator's output: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(wanted)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
