"""The Helm chart, checked by the real tools: helm lint/template, the real kube-apiserver
(server-side dry run, RBAC exercised with the chart's ServiceAccount token), promtool on
the alert rules, and the dashboard's queries against the metrics runner/metrics.py defines."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import watch
from prometheus_client import CollectorRegistry

from runner.jobs.kube import KubeApi
from runner.jobs.manifest import FINALIZER
from runner.metrics import Metrics
from runner.settings import Settings
from runner.settings.variables import VARIABLES
from runner.signals import Signals
from tests.support import dashboard
from tests.support.ports import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kube-stream-runner"
RULES = CHART / "alerts" / "rules.yaml"
DASHBOARD = CHART / "dashboards" / "kube-stream-runner.json"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

# Everything the chart can switch on, except the CRD kinds the bed does not have.
EVERYTHING_BUT_CRDS: dict[str, Any] = {
    "secrets": {"existingSecret": "ksr-secrets", "keys": {"KSR_CONSOLE_TOKEN": "console-token"}},
    "console": {"enabled": True, "readAuth": True, "actions": True},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Platform"}},
    "config": {
        "allowedImages": ["busybox:", "registry.example/team/"],
        "allowedEnvRefs": ["job-config"],
        "allowedServiceAccounts": ["runner-jobs"],
        "webhookAllow": ["*.svc.cluster.local"],
        "extraEnv": {"KSR_STATE_TTL": 1209600, "KSR_MAX_DELIVERIES": "3"},
    },
    "podAnnotations": {"example.com/team": "platform"},
    "podLabels": {"team": "platform"},
    "priorityClassName": "",
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "topologyKey": "topology.kubernetes.io/zone",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "kube-stream-runner"}},
                    },
                }
            ]
        }
    },
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "runners", "effect": "NoSchedule"}],
    "image": {"digest": "sha256:" + "0" * 64},
}
EVERYTHING = {
    **EVERYTHING_BUT_CRDS,
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
}


# -- tools ------------------------------------------------------------------------------------


def _tool(name: str, path: Path | None = None) -> str:
    found = (
        str(path)
        if path is not None and path.exists()
        else shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    )
    if not found:
        pytest.fail(f"{name} missing (make test installs it)", pytrace=False)
    return found


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    from tests.support.kube import (
        build,  # scripts/testenv: where the bed's binaries are
    )

    home = tmp_path_factory.mktemp("helm")
    saved = {k: os.environ.get(k) for k in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}
    for key in saved:  # helm keeps caches and repositories out of $HOME
        os.environ[key] = str(home / key.lower())
    yield [_tool("helm", build.bin_dir() / "helm")]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run(
    argv: list[str], *, input: str | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(argv[:3])} ... exited {done.returncode}\n{done.stdout}\n{done.stderr}", pytrace=False)
    return done


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def template(
    helm: list[str],
    tmp_path: Path,
    *,
    namespace: str = "ksr",
    release: str = "ksr",
    values: dict[str, Any] | None = None,
) -> str:
    return run(
        [
            *helm,
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "-f",
            str(values_file(tmp_path, values or {})),
        ]
    ).stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def kubectl(kube: Any, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([_tool("kubectl"), *args], input=input, env={"KUBECONFIG": kube.kubeconfig}, check=check)


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs)


def names_of(docs: list[dict[str, Any]], kind: str) -> list[str]:
    return [d["metadata"]["name"] for d in docs if d["kind"] == kind]


# -- lint and render --------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything-on"])
def test_helm_lint(helm: list[str], tmp_path: Path, values: dict[str, Any]) -> None:
    out = run([*helm, "lint", "--strict", str(CHART), "-f", str(values_file(tmp_path, values))]).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {"streams": ["ksr:jobs:x:dead"]}}, "config/streams/0"),
        ({"config": {"allowedNamespaces": ["*", "other"]}}, '"*" must be alone'),
        ({"config": {"lease": {"durationSeconds": 5}}}, "durationSeconds must exceed"),
        ({"config": {"lease": {"durationSeconds": 11}}}, "KSR_BLOCK_MS (config.extraEnv, default 2000) must not"),
        ({"config": {"extraEnv": {"KSR_BLOCK_MS": 5001}}}, "KSR_BLOCK_MS (config.extraEnv, default 2000) must not"),
        ({"shutdownGraceSeconds": 28}, "terminationGracePeriodSeconds must exceed"),
        ({"redis": {"url": ""}}, "set redis.url or secrets.existingSecret"),
        ({"redis": {"auth": {"existingSecret": "x"}}}, "additional properties 'auth' not allowed"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"console": {"actions": True}}, "console.actions: needs the operators' token: secrets.existingSecret"),
        ({"console": {"token": "x"}}, "additional properties 'token' not allowed"),
        ({"schedules": [{"name": "x", "cron": "* * *", "message": {"service": "s", "job": {}}}]}, "/schedules/0/cron"),
        ({"schedules": [{"name": "x", "cron": "* * * * *", "catchUp": "all", "message": {}}]}, "/schedules/0/catchUp"),
    ],
)
def test_bad_values_are_refused_with_a_reason(
    helm: list[str], tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    done = run([*helm, "template", "ksr", str(CHART), "-f", str(values_file(tmp_path, values))], check=False)
    assert done.returncode != 0
    assert message in done.stderr


def test_defaults_render_what_the_runner_expects(helm: list[str], tmp_path: Path) -> None:
    docs = documents(template(helm, tmp_path, namespace="jobs-ns"))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["KSR_ALLOWED_NAMESPACES"] == "jobs-ns"  # the RBAC's namespaces, said explicitly
    assert config["KSR_STREAMS"] == "ksr:jobs:critical,ksr:jobs:default,ksr:jobs:low"
    assert float(config["KSR_SHUTDOWN_GRACE"]) + 5 < 30

    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert deploy["spec"]["replicas"] == 3
    pod = deploy["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["HTTP_SERVER_PORT"]["value"] == "8080"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith("/run/ksr/") and "/run/ksr" in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/run/ksr"]] and "emptyDir" in volumes[mounts["/tmp"]]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["port"] == "http"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_schedules_render_into_a_mounted_configmap_the_runner_accepts(helm: list[str], tmp_path: Path) -> None:
    from runner.schedules.config import parse_schedules

    entry = {
        "name": "nightly",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "catchUp": "latest",
        "catchUpWindow": 600,
        "message": {"service": "reports", "job": {"prefixName": "report", "namespace": "ksr", "image": "busybox"}},
    }
    docs = documents(template(helm, tmp_path, values={"schedules": [entry]}))
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    path = maps["ksr-kube-stream-runner"]["KSR_SCHEDULES"]
    (parsed,) = parse_schedules(
        yaml.safe_load(maps["ksr-kube-stream-runner-schedules"]["schedules.yaml"]),
        streams=("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low"),
        default_stream="ksr:jobs:default",
    )
    assert (parsed.name, parsed.cron.expr, parsed.timezone, parsed.catch_up_window) == (
        "nightly",
        "30 2 * * *",
        "Europe/Berlin",
        600.0,
    )
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "schedules")
    assert path == mount["mountPath"] + "/schedules.yaml" and mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "schedules")
    assert volume["configMap"]["name"] == "ksr-kube-stream-runner-schedules"
    assert "ksr-kube-stream-runner-schedules" in maps["ksr-kube-stream-runner"]["KSR_PROTECTED_NAMES"].split(",")


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything-on"])
def test_the_chart_sets_only_declared_variables_and_the_runner_accepts_them(
    helm: list[str], tmp_path: Path, values: dict[str, Any]
) -> None:
    docs = documents(template(helm, tmp_path, namespace="jobs-ns", values=values))
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    declared = {v.name for v in VARIABLES}
    # a misspelt key in the chart would be silently ignored by the runner
    assert set(config) - declared == set()
    assert {e["name"] for e in c["env"]} - declared == {"TMPDIR"}  # the platform's, not ours
    # The console's token is the Secret's (secretKeyRef): the kubelet would give its value.
    token = {e["name"]: "a-token-of-the-secret-0123" for e in c["env"] if e["name"] == "KSR_CONSOLE_TOKEN"}
    settings = Settings.from_env(
        {
            **config,
            **env,
            **token,
            "POD_NAME": "ksr-0",
            "POD_NAMESPACE": "jobs-ns",
            "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        }
    )
    assert (settings.lock, settings.kube.executor, settings.policy.allowed_namespaces) == (
        "lease",
        "kubernetes",
        ("jobs-ns",),
    )
    assert settings.server.runtime_dir == Path("/run/ksr")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {"KSR_CONSOLE_ENABLED": "false", "KSR_CONSOLE_READ_AUTH": "false", "KSR_CONSOLE_ACTIONS": "false"}),
        (
            {"console": {"readAuth": False}},
            {"KSR_CONSOLE_ENABLED": "true", "KSR_CONSOLE_READ_AUTH": "false", "KSR_CONSOLE_ACTIONS": "false"},
        ),
        (
            {"secrets": {"existingSecret": "creds", "keys": {"KSR_CONSOLE_TOKEN": "console"}}},
            {"KSR_CONSOLE_ENABLED": "true", "KSR_CONSOLE_READ_AUTH": "true", "KSR_CONSOLE_ACTIONS": "false"},
        ),
        (
            {
                "secrets": {"existingSecret": "creds", "keys": {"KSR_CONSOLE_TOKEN": "console"}},
                "console": {"actions": True},
            },
            {"KSR_CONSOLE_ENABLED": "true", "KSR_CONSOLE_READ_AUTH": "true", "KSR_CONSOLE_ACTIONS": "true"},
        ),
    ],
    ids=["default-no-token-off", "open-reading", "token-reading", "token-actions"],
)
def test_the_console_values_render_settings_the_runner_accepts(
    helm: list[str], tmp_path: Path, values: dict[str, Any], expected: dict[str, str]
) -> None:
    """Reading needs the token by default; with no token the console stays off rather than
    open. The token comes from the Secret, never the ConfigMap."""
    values = {"redis": {"url": "redis://redis:6379/0"}, **values}
    docs = documents(template(helm, tmp_path, namespace="ns", values=values))
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert {k: config[k] for k in expected} == expected
    assert "KSR_CONSOLE_TOKEN" not in config
    (c,) = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
    token = [e for e in c["env"] if e["name"] == "KSR_CONSOLE_TOKEN"]
    if "secrets" in values:
        assert token == [
            {"name": "KSR_CONSOLE_TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "console"}}}
        ]
    else:
        assert token == []
    env = {**config, "POD_NAME": "ksr-0", "POD_NAMESPACE": "ns"}
    if token:
        env["KSR_CONSOLE_TOKEN"] = "a-token-of-the-secret-0123"
    s = Settings.from_env(env)
    assert (s.console.enabled, s.console.read_auth, s.console.actions) == tuple(
        expected[k] == "true" for k in ("KSR_CONSOLE_ENABLED", "KSR_CONSOLE_READ_AUTH", "KSR_CONSOLE_ACTIONS")
    )


def _settings_of(docs: list[dict[str, Any]], namespace: str) -> Any:
    """The runner's settings as a pod of the rendered Deployment would load them."""
    from runner.settings import Settings

    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and not d["metadata"]["name"].endswith("-dashboard")]
    return Settings.from_env({**config["data"], "POD_NAME": "ksr-0", "POD_NAMESPACE": namespace})


def _refusal(settings: Any, namespace: str, **job: Any) -> dict[str, str]:
    """The policy's problems for a message with `job` fields in `namespace` ({} = allowed)."""
    from runner.errors import PolicyRefused
    from runner.message import parse_message
    from runner.pipeline.policy import check_policy
    from tests.support.messages import message

    doc = message("own-secrets", namespace, webhook="http://93.184.216.34/hook", **job)
    try:
        check_policy(parse_message(json.dumps(doc)), settings, resolver=lambda host, port: [])
    except PolicyRefused as e:
        return dict(e.problems)
    return {}


def test_chart_defaults_refuse_envrefs_to_the_runners_own_config_and_secret(helm: list[str], tmp_path: Path) -> None:
    docs = documents(template(helm, tmp_path, namespace="ksr-ns", values={"secrets": {"existingSecret": "ksr-creds"}}))
    settings = _settings_of(docs, "ksr-ns")
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    own = {ref["configMapRef"]["name"] for ref in container["envFrom"]} | {
        e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert own == {"ksr-kube-stream-runner", "ksr-creds"}  # what holds REDIS_URL and KSR_WEBHOOK_SECRET
    for name in sorted(own):
        for kind in ("secret", "configmap"):
            problems = _refusal(settings, "ksr-ns", envRef=[{"name": name, "type": kind}])
            assert "belongs to the runner itself" in problems["job.envRef[0].name"], (name, kind, problems)
        assert "belongs to the runner itself" in _refusal(
            settings, "ksr-ns", volume={"mountPath": "/d", "pvc": name}
        ).get("job.volume.pvc", ""), name
    # Any other name in the release namespace is refused too until listed.
    assert "KSR_STRICT_ENVREF_NAMESPACES" in _refusal(
        settings, "ksr-ns", envRef=[{"name": "app-config", "type": "configmap"}]
    ).get("job.envRef[0].name", "")


def test_chart_envref_allow_list_opens_names_but_never_the_runners_own(helm: list[str], tmp_path: Path) -> None:
    values = {
        "config": {
            "allowedNamespaces": ["ksr-ns", "jobs"],
            "allowedEnvRefs": ["*"],
            "protectedNames": ["jobs/shared-creds"],
        }
    }
    settings = _settings_of(documents(template(helm, tmp_path, namespace="ksr-ns", values=values)), "ksr-ns")
    assert _refusal(settings, "ksr-ns", envRef=[{"name": "app-config", "type": "configmap"}]) == {}
    assert _refusal(settings, "ksr-ns", envRef=[{"name": "shared-creds", "type": "secret"}]) == {}
    for namespace, name in (("ksr-ns", "ksr-kube-stream-runner"), ("jobs", "shared-creds")):
        problems = _refusal(settings, namespace, envRef=[{"name": name, "type": "secret"}])
        assert "belongs to the runner itself" in problems["job.envRef[0].name"], (namespace, name)


def test_crd_kinds_render_and_match_the_service_and_rule_file(helm: list[str], tmp_path: Path) -> None:
    docs = documents(template(helm, tmp_path, namespace="mon", values=EVERYTHING))
    (service,) = [d for d in docs if d["kind"] == "Service"]
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    (dashboard,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert monitor["apiVersion"] == rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == rule["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert (
        [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]] == ["http"]
    )
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())  # the file promtool checks, unchanged
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["kube-stream-runner.json"]) == json.loads(DASHBOARD.read_text())

    # The PrometheusRule's spec, as Prometheus would load it.
    rule_file = tmp_path / "from-prometheusrule.yaml"
    rule_file.write_text(yaml.safe_dump(rule["spec"]))
    run(["promtool", "check", "rules", str(rule_file)])


# -- the real kube-apiserver ------------------------------------------------------------------


def _restricted(kube: Any, namespace: str) -> None:
    kubectl(kube, "label", "namespace", namespace, "--overwrite", "pod-security.kubernetes.io/enforce=restricted")


def _template_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's pod template as a Pod, for Pod Security admission (which enforces on
    Pods, and only warns, if at all, on a Deployment). Its ServiceAccount is not created by a
    dry run, so it runs as `default` here: Pod Security does not look at the account."""
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    template = deploy["spec"]["template"]
    spec = {**template["spec"], "serviceAccountName": "default"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pod-template-check", **template["metadata"]},
        "spec": spec,
    }


@pytest.mark.kube
@pytest.mark.parametrize("values", [{}, EVERYTHING_BUT_CRDS], ids=["defaults", "everything-but-crds"])
def test_apiserver_accepts_the_rendered_manifests(
    kube: Any, namespace: str, helm: list[str], tmp_path: Path, values: dict[str, Any]
) -> None:
    _restricted(kube, namespace)
    docs = documents(template(helm, tmp_path, namespace=namespace, values=values))
    assert not {d["kind"] for d in docs} & CRD_KINDS
    done = kubectl(kube, "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=dump(docs))
    assert len(done.stdout.strip().splitlines()) == len(docs), done.stdout
    # The pods pass Pod Security "restricted", enforced.
    kubectl(kube, "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=dump([_template_pod(docs)]))


@pytest.mark.kube
def test_pod_security_check_is_not_vacuous(kube: Any, namespace: str, helm: list[str], tmp_path: Path) -> None:
    _restricted(kube, namespace)
    docs = documents(
        template(helm, tmp_path, namespace=namespace, values={"securityContext": None})
    )  # null drops the defaults
    done = kubectl(
        kube, "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=dump([_template_pod(docs)]), check=False
    )
    assert done.returncode != 0 and "violates PodSecurity" in done.stderr, done.stderr


def _job(name: str, *finalizers: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "kube-stream-runner"},
            "finalizers": list(finalizers),
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 60,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "job", "image": "busybox:latest", "command": ["true"]}],
                }
            },
        },
    }


def _status(call: Any) -> int:
    try:
        result = call()
        if hasattr(result, "__next__"):
            list(result)
    except k8s.ApiException as e:
        return int(e.status)
    return 200


def _apply_rbac(kube: Any, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rbac = [
        d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    ]
    kubectl(kube, "apply", "-f", "-", input=dump(rbac))
    return rbac


def _allowed(
    kube: Any, user: str, verb: str, resource: str, namespace: str | None, group: str = "", name: str | None = None
) -> bool:
    review = k8s.AuthorizationV1Api(kube.api_client()).create_subject_access_review(
        {
            "spec": {
                "user": user,
                "resourceAttributes": {
                    "group": group,
                    "resource": resource,
                    "verb": verb,
                    "namespace": namespace,
                    "name": name,
                },
            }
        }
    )
    return bool(review.status.allowed)


# How the code calls the API: the kubernetes client's methods (election/lease_lock.py),
# named by verb and resource, and runner/jobs/rest.py's requests, by method and path_of(kind).
# Collections are read only through KubeApi._pages, and what is listed is also watched
# (runner/jobs/informer.py lists, then watches from the list's resourceVersion).
_CLIENT_CALL = re.compile(
    r"\.(create|read|replace|patch|delete|list)_(?:namespaced_)?(job|pod|lease)(?:_for_all_namespaces)?\("
)
_REST_CALL = re.compile(r'request\(\s*"(GET|POST|PUT|PATCH|DELETE)",\s*path_of\("(\w+)"')
_PAGES_CALL = re.compile(r'_pages\("(\w+)"')
_VERBS_OF = {
    "create": {"create"},
    "read": {"get"},
    "replace": {"update"},
    "patch": {"patch"},
    "delete": {"delete"},
    "list": {"list", "watch"},
}
_VERB_OF_METHOD = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def called_verbs(sources: list[Path]) -> dict[str, set[str]]:
    called: dict[str, set[str]] = {}
    for source in sources:
        text = source.read_text()
        for verb, resource in _CLIENT_CALL.findall(text):
            called.setdefault(f"{resource}s", set()).update(_VERBS_OF[verb])
        for method, kind in _REST_CALL.findall(text):
            called.setdefault(kind, set()).add(_VERB_OF_METHOD[method])
        for kind in _PAGES_CALL.findall(text):
            called.setdefault(kind, set()).update({"list", "watch"})
    return called


def test_chart_grants_exactly_the_verbs_the_code_calls(helm: list[str], tmp_path: Path) -> None:
    called = called_verbs([*(ROOT / "runner").rglob("*.py"), *(ROOT / "election").rglob("*.py")])
    assert called["jobs"] >= {"create", "get", "list", "watch"}, called  # the scan still finds the calls
    granted: dict[str, set[str]] = {}
    for doc in documents(template(helm, tmp_path)):
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc["rules"]:
                for resource in rule["resources"]:
                    granted.setdefault(resource, set()).update(rule["verbs"])
    assert granted == called


@pytest.mark.kube
def test_chart_rbac_is_enough_for_the_runner_and_no_more(
    kube: Any, namespace: str, helm: list[str], tmp_path: Path
) -> None:
    from tests.support.kube import delete_namespace, new_namespace

    other = new_namespace(kube)  # a second namespace Jobs may go to
    try:
        docs = documents(
            template(helm, tmp_path, namespace=namespace, values={"config": {"allowedNamespaces": [namespace, other]}})
        )
        _apply_rbac(kube, docs)
        (account,) = names_of(docs, "ServiceAccount")
        user = f"system:serviceaccount:{namespace}:{account}"
        wait_for(
            lambda: (
                all(_allowed(kube, user, "create", "jobs", ns, "batch") for ns in (namespace, other))
                and _allowed(kube, user, "update", "leases", namespace, "coordination.k8s.io", "ksr-leader")
            ),
            timeout=15,
            what="the chart's Roles to take effect",
        )

        api = kube.service_account_client(namespace, account)  # a token of the chart's account
        coord, batch, core = k8s.CoordinationV1Api(api), k8s.BatchV1Api(api), k8s.CoreV1Api(api)

        # The Lease: what election/ does (create, get, update).
        lease = coord.create_namespaced_lease(
            namespace,
            {
                "metadata": {"name": "ksr-leader"},
                "spec": {"holderIdentity": "ksr-0", "leaseDurationSeconds": 15, "leaseTransitions": 0},
            },
        )
        lease = coord.read_namespaced_lease("ksr-leader", namespace)
        lease.spec.holder_identity, lease.spec.lease_transitions = "ksr-1", 1
        assert coord.replace_namespaced_lease("ksr-leader", namespace, lease).spec.holder_identity == "ksr-1"

        # Jobs and Pods: what runner/jobs/kube.py does, in every allowed namespace.
        for ns in (namespace, other):
            name = f"ksr-rbac-{uuid.uuid4().hex[:6]}"
            batch.create_namespaced_job(ns, _job(name, FINALIZER))
            assert batch.read_namespaced_job(name, ns).metadata.name == name
            selector = "app.kubernetes.io/managed-by=kube-stream-runner"
            assert name in [j.metadata.name for j in batch.list_namespaced_job(ns, label_selector=selector).items]
            core.list_namespaced_pod(ns, label_selector=selector)
            for lister in (batch.list_namespaced_job, core.list_namespaced_pod):
                assert (
                    _status(lambda: watch.Watch().stream(lister, ns, label_selector=selector, timeout_seconds=1)) == 200
                )
            # The finalizer: held by a deletion, then taken off (a JSON patch, as kube.py does).
            batch.delete_namespaced_job(name, ns, propagation_policy="Background")
            held = batch.read_namespaced_job(name, ns)
            assert held.metadata.deletion_timestamp is not None and held.metadata.finalizers == [FINALIZER]
            KubeApi(api, timeout=10, signals=Signals([])).remove_finalizer(
                {"metadata": {"namespace": ns, "name": name, "finalizers": [FINALIZER]}}, FINALIZER
            )
            wait_for(lambda: _status(lambda: batch.read_namespaced_job(name, ns)) == 404, timeout=15, what="Job gone")

        # Outside the grant.
        refused = {
            "list secrets": lambda: core.list_namespaced_secret(namespace),
            "get a pod": lambda: core.read_namespaced_pod("x", namespace),  # nothing reads one pod
            "create pods": lambda: core.create_namespaced_pod(
                namespace, {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "busybox"}]}}
            ),
            "list jobs in default": lambda: batch.list_namespaced_job("default"),
            "list jobs everywhere": lambda: batch.list_job_for_all_namespaces(),
            "get another Lease": lambda: coord.read_namespaced_lease("someone-elses", namespace),
            "delete the Lease": lambda: coord.delete_namespaced_lease("ksr-leader", namespace),
            "update a Job": lambda: batch.replace_namespaced_job("x", namespace, _job("x")),
            "patch a Job's status": lambda: batch.patch_namespaced_job_status("x", namespace, {"status": {}}),
        }
        assert {what: _status(call) for what, call in refused.items()} == {what: 403 for what in refused}
    finally:
        delete_namespace(kube, other)


@pytest.mark.kube
def test_any_namespace_becomes_a_cluster_role(kube: Any, namespace: str, helm: list[str], tmp_path: Path) -> None:
    from tests.support.kube import delete_namespace, new_namespace

    release = f"ksr-{uuid.uuid4().hex[:6]}"  # cluster-scoped names must not collide between runs
    docs = documents(
        template(helm, tmp_path, namespace=namespace, release=release, values={"config": {"allowedNamespaces": ["*"]}})
    )
    assert next(d for d in docs if d["kind"] == "ConfigMap")["data"]["KSR_ALLOWED_NAMESPACES"] == "*"
    assert names_of(docs, "Role") == [f"{release}-kube-stream-runner-leader-election"]
    other = new_namespace(kube)
    rbac = _apply_rbac(kube, docs)
    try:
        (account,) = names_of(docs, "ServiceAccount")
        user = f"system:serviceaccount:{namespace}:{account}"
        wait_for(
            lambda: _allowed(kube, user, "watch", "jobs", None, "batch"),
            timeout=15,
            what="the ClusterRole to take effect",
        )
        api = kube.service_account_client(namespace, account)
        batch, core = k8s.BatchV1Api(api), k8s.CoreV1Api(api)
        name = f"ksr-rbac-{uuid.uuid4().hex[:6]}"
        batch.create_namespaced_job(other, _job(name))
        assert _status(lambda: batch.list_job_for_all_namespaces(label_selector="app.kubernetes.io/managed-by")) == 200
        assert _status(lambda: watch.Watch().stream(core.list_pod_for_all_namespaces, timeout_seconds=1)) == 200
        batch.delete_namespaced_job(name, other, propagation_policy="Background")
        assert _status(lambda: core.list_namespaced_secret(other)) == 403
    finally:
        cluster_scoped = [d for d in rbac if d["kind"].startswith("Cluster")]
        kubectl(kube, "delete", "--ignore-not-found", "-f", "-", input=dump(cluster_scoped))
        delete_namespace(kube, other)


# -- alerts: tests/integration/test_alerts.py (rendering, promtool check and unit tests, runbooks)


# -- metric names -----------------------------------------------------------------------------


def defined_series() -> set[str]:
    """Every series name runner/metrics.py exposes, with the suffixes Prometheus sees."""
    registry = CollectorRegistry()
    Metrics(registry)
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    return {family.name + s for family in registry.collect() for s in suffixes[family.type]}


def _dashboard_queries() -> list[tuple[str, str]]:
    """Every query of the dashboard: panels, annotations and variables (tests/support/dashboard.py)."""
    return [(q.where, q.expr) for q in dashboard.queries()]


METRIC = re.compile(r"\bksr_[a-z0-9_]+")


def test_dashboard_and_alerts_query_only_defined_metrics() -> None:
    defined = defined_series()
    assert {"ksr_leader", "ksr_messages_total", "ksr_dispatch_latency_seconds_bucket"} <= defined
    used: dict[str, str] = {}
    for where, expr in _dashboard_queries():
        used.update({name: where for name in METRIC.findall(expr)})
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            used.update({name: f"alert {rule['alert']}" for name in METRIC.findall(rule["expr"])})
    unknown = {name: where for name, where in used.items() if name not in defined}
    assert not unknown, f"queried but not defined in runner/metrics.py: {unknown}"
    # the dashboard covers what operators asked for
    wanted = {
        "ksr_leader",
        "ksr_stream_length",
        "ksr_stream_pending",
        "ksr_stream_lag",
        "ksr_stream_dead_letters",
        "ksr_messages_total",
        "ksr_dispatch_latency_seconds_bucket",
        "ksr_active_jobs",
        "ksr_jobs_finished_total",
        "ksr_job_duration_seconds_bucket",
        "ksr_kube_requests_total",
        "ksr_kube_request_duration_seconds_bucket",
        "ksr_callbacks_total",
        "ksr_loop_heartbeat_timestamp_seconds",
    }
    on_dashboard = {name for _, expr in _dashboard_queries() for name in METRIC.findall(expr)}
    assert wanted <= on_dashboard, wanted - on_dashboard


def test_dashboard_is_valid_grafana_json_with_valid_promql(tmp_path: Path) -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] >= 39  # what the SDK's Grafana 11.6 schema writes
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "kube-stream-runner"
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    # Grafana's variables replaced by what Grafana would put there, every query must parse.
    substitutions = {"$__rate_interval": "5m", "$__range": "6h", "$namespace": ".*", "$job": ".*"}
    rules = []
    for n, (where, expr) in enumerate(q for q in _dashboard_queries() if not q[0].startswith("variable")):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{where}: unknown variable in {expr}"
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([_tool("promtool"), "check", "rules", str(path)])


# -- production Redis (docs/redis.md) -----------------------------------------------------------

REDIS_VALUES: dict[str, Any] = {
    "redis": {
        "url": "rediss://redis/0",
        "sentinels": ["sentinel-0.redis:26379", "sentinel-1.redis:26379", "sentinel-2.redis:26379"],
        "masterName": "ksr",
        "sentinelTls": True,
        "tls": {"secretName": "redis-tls", "caKey": "ca.crt", "certKey": "tls.crt", "keyKey": "tls.key"},
    },
    # The URL stays in the ConfigMap (no password in it); the credentials come from the Secret.
    "secrets": {
        "existingSecret": "redis-auth",
        "keys": {
            "REDIS_URL": "",
            "KSR_WEBHOOK_SECRET": "",
            "KSR_REDIS_USERNAME": "username",
            "KSR_REDIS_PASSWORD": "password",
            "KSR_REDIS_SENTINEL_PASSWORD": "sentinel",
        },
    },
}


def test_redis_values_render_sentinel_tls_and_credentials_from_secrets(helm: list[str], tmp_path: Path) -> None:
    docs = documents(template(helm, tmp_path, namespace="jobs-ns", values=REDIS_VALUES))
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["KSR_REDIS_SENTINELS"] == "sentinel-0.redis:26379,sentinel-1.redis:26379,sentinel-2.redis:26379"
    assert (config["KSR_REDIS_MASTER"], config["KSR_REDIS_SENTINEL_TLS"]) == ("ksr", "true")
    assert config["KSR_REDIS_TLS_CA"] == "/etc/ksr/redis-tls/ca.crt"
    assert config["KSR_REDIS_TLS_KEY"] == "/etc/ksr/redis-tls/tls.key"
    assert "password" not in json.dumps(config).lower()  # credentials never land in the ConfigMap
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in c["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs["KSR_REDIS_USERNAME"] == {"name": "redis-auth", "key": "username"}
    assert refs["KSR_REDIS_PASSWORD"] == {"name": "redis-auth", "key": "password"}
    assert refs["KSR_REDIS_SENTINEL_PASSWORD"] == {"name": "redis-auth", "key": "sentinel"}
    assert set(refs) == {"KSR_REDIS_USERNAME", "KSR_REDIS_PASSWORD", "KSR_REDIS_SENTINEL_PASSWORD"}  # "" = not read
    assert config["REDIS_URL"] == "rediss://redis/0"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "redis-tls")
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/ksr/redis-tls", True)
    assert next(v for v in pod["volumes"] if v["name"] == "redis-tls")["secret"]["secretName"] == "redis-tls"
    assert {"redis-tls", "redis-auth"} <= set(config["KSR_PROTECTED_NAMES"].split(","))  # no message may mount them
    # The runner accepts what a pod would see (the mounted files stand in here).
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / name).write_text("pem")
    files = {k: str(tmp_path / Path(v).name) for k, v in config.items() if k.startswith("KSR_REDIS_TLS_")}
    secrets = {"KSR_REDIS_USERNAME": "ksr", "KSR_REDIS_PASSWORD": "pw", "KSR_REDIS_SENTINEL_PASSWORD": "spw"}
    env = {
        **config,
        **files,
        **secrets,
        "POD_NAME": "ksr-0",
        "POD_NAMESPACE": "jobs-ns",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    }
    settings = Settings.from_env(env)
    assert settings.lock == "lease" and settings.redis.min_replicas == 1
    assert settings.redis.sentinels[0] == ("sentinel-0.redis", 26379) and settings.redis.sentinel_tls is True


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"redis": {"sentinels": ["s:26379"]}, "config": {"extraEnv": {"KSR_LOCK": "redis"}}},
            "Lease lock is required",
        ),
        ({"redis": {"sentinels": ["no-port"]}}, "redis/sentinels/0"),
        ({"redis": {"tls": {"secretName": "t", "certKey": "tls.crt"}}}, "redis.tls.certKey needs redis.tls.keyKey"),
        ({"redis": {"minReplicas": -1}}, "redis/minReplicas"),
    ],
)
def test_bad_redis_values_are_refused(helm: list[str], tmp_path: Path, values: dict[str, Any], message: str) -> None:
    done = run([*helm, "template", "ksr", str(CHART), "-f", str(values_file(tmp_path, values))], check=False)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
