"""The chart's extension hooks (docs/deploy.md, "Extending the chart"), rendered by the real
helm: each hook lands where it should, the schema still refuses a misspelt key by name and
checks the hooks' items (EnvVar, Volume, VolumeMount, Container), and the apiserver accepts
everything switched on at once (server-side dry run, Pod Security "restricted" enforced)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.settings import Settings
from tests.support.chart import CHART, config_map, helm, one, render, values_file
from tests.support.kube import build

FULLNAME = "ksr-kube-stream-runner"
SELECTOR = {"app.kubernetes.io/name": "kube-stream-runner", "app.kubernetes.io/instance": "ksr"}
# A container that passes Pod Security "restricted" (the pod's securityContext gives the user).
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
SIDECAR = {
    "name": "proxy",
    "image": "registry.example/proxy:1",
    "args": ["--listen=:9000"],
    "ports": [{"name": "proxy", "containerPort": 9000}],
    "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
    "securityContext": RESTRICTED,
}
INIT = {"name": "wait-redis", "image": "registry.example/tools:1", "command": ["true"], "securityContext": RESTRICTED}
EXTRA_ENV = [
    {"name": "KSR_MAX_ACTIVE_JOBS", "valueFrom": {"secretKeyRef": {"name": "ksr-limits", "key": "maxActiveJobs"}}},
    {"name": "KSR_STATE_TTL", "value": "1209600"},
    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
]
# Every hook at once: what the apiserver must accept together.
HOOKS: dict[str, Any] = {
    "commonLabels": {"team": "platform"},
    "commonAnnotations": {"example.com/owner": "platform"},
    "image": {"registry": "registry.example:5000", "repository": "team/kube-stream-runner", "tag": "1.2.3"},
    "extraEnvVars": EXTRA_ENV,
    "extraEnvVarsCM": "ksr-extra-config",
    "extraEnvVarsSecret": "ksr-extra-secrets",
    "extraVolumes": [{"name": "shared", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}],
    "extraVolumeMounts": [{"name": "shared", "mountPath": "/shared", "readOnly": True}],
    "initContainers": [INIT],
    "sidecars": [SIDECAR],
    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
    "podDisruptionBudget": {"minAvailable": 2},
    "networkPolicy": {
        "enabled": True,
        "allowExternal": False,
        "ingressNSMatchLabels": {"kubernetes.io/metadata.name": "monitoring"},
        "ingressNSPodMatchLabels": {"app.kubernetes.io/name": "prometheus"},
        "allowExternalEgress": False,
        "extraIngress": [{"ports": [{"port": 9000, "protocol": "TCP"}]}],
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 4317, "protocol": "TCP"}]}],
    },
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-hooks")


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(one(docs, "Deployment")["spec"]["template"]["spec"])


def runner_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (runner,) = [c for c in pod_spec(docs)["containers"] if c["name"] == "runner"]
    return dict(runner)


def refusal(home: Path, values: dict[str, Any]) -> str:
    """helm template's stderr for values it must refuse."""
    done = subprocess.run(
        [str(build.bin_dir() / "helm"), "template", "ksr", str(CHART), "-f", str(values_file(home, values))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, f"helm accepted {values}"
    return done.stderr


# -- each hook renders where it should ----------------------------------------------------------


def test_extra_env_vars_follow_the_charts_env_and_keep_their_sources(home: Path) -> None:
    docs = render(home, namespace="ns", values={"extraEnvVars": EXTRA_ENV})
    env = runner_container(docs)["env"]
    assert env[-3:] == EXTRA_ENV  # as given, after the chart's own: valueFrom untouched
    assert [e["name"] for e in env[:2]] == ["POD_NAME", "POD_NAMESPACE"]
    # The Secret it reads joins the names no message may envRef or mount.
    assert "ksr-limits" in config_map(docs)["data"]["KSR_PROTECTED_NAMES"].split(",")


def test_extra_env_from_configmap_then_secret_after_the_charts_configmap(home: Path) -> None:
    docs = render(home, namespace="ns", values={"extraEnvVarsCM": "team-config", "extraEnvVarsSecret": "team-secrets"})
    assert runner_container(docs)["envFrom"] == [
        {"configMapRef": {"name": FULLNAME}},
        {"configMapRef": {"name": "team-config"}},
        {"secretRef": {"name": "team-secrets"}},
    ]
    protected = config_map(docs)["data"]["KSR_PROTECTED_NAMES"].split(",")
    assert {"team-config", "team-secrets"} <= set(protected)


def test_extra_volumes_and_mounts(home: Path) -> None:
    values = {
        "extraVolumes": [{"name": "ca", "secret": {"secretName": "corp-ca"}}, {"name": "scratch", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
    }
    docs = render(home, namespace="ns", values=values)
    pod = pod_spec(docs)
    assert [v["name"] for v in pod["volumes"]] == ["runtime", "tmp", "ca", "scratch"]
    assert pod["volumes"][2] == {"name": "ca", "secret": {"secretName": "corp-ca"}}
    mounts = runner_container(docs)["volumeMounts"]
    assert [m["mountPath"] for m in mounts] == ["/run/ksr", "/tmp", "/etc/corp-ca"]
    assert mounts[-1] == {"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True}
    assert "corp-ca" in config_map(docs)["data"]["KSR_PROTECTED_NAMES"].split(",")


def test_init_containers_and_sidecars(home: Path) -> None:
    docs = render(home, namespace="ns", values={"initContainers": [INIT], "sidecars": [SIDECAR]})
    pod = pod_spec(docs)
    assert pod["initContainers"] == [INIT]
    assert [c["name"] for c in pod["containers"]] == ["runner", "proxy"]
    assert pod["containers"][1] == SIDECAR
    defaults = pod_spec(render(home, namespace="ns", values={}))
    assert "initContainers" not in defaults and [c["name"] for c in defaults["containers"]] == ["runner"]


def test_common_labels_and_annotations_reach_every_object_but_never_a_selector(home: Path) -> None:
    values = {
        **HOOKS,
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
        "service": {"annotations": {"example.com/lb": "internal"}},
        "secrets": {"existingSecret": "ksr-secrets"},
    }
    docs = render(home, namespace="ns", values=values)
    kinds = {d["kind"] for d in docs}
    assert {"NetworkPolicy", "ServiceMonitor", "PrometheusRule", "PodDisruptionBudget", "Role", "RoleBinding"} <= kinds
    for doc in docs:
        assert doc["metadata"]["labels"]["team"] == "platform", doc["kind"]
        assert doc["metadata"]["annotations"]["example.com/owner"] == "platform", doc["kind"]
    assert one(docs, "Service")["metadata"]["annotations"]["example.com/lb"] == "internal"  # its own kept
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["selector"]["matchLabels"] == SELECTOR
    assert deployment["spec"]["template"]["metadata"]["labels"] == {**SELECTOR, "team": "platform"}
    assert one(docs, "Service")["spec"]["selector"] == SELECTOR
    # The pods get podAnnotations only (commonAnnotations would roll them on every change).
    assert "example.com/owner" not in deployment["spec"]["template"]["metadata"]["annotations"]


def test_image_registry_tag_and_digest(home: Path) -> None:
    image = {"registry": "registry.example:5000", "repository": "team/kube-stream-runner", "tag": "1.2.3"}
    docs = render(home, namespace="ns", values={"image": image})
    assert runner_container(docs)["image"] == "registry.example:5000/team/kube-stream-runner:1.2.3"
    digest = "sha256:" + "a" * 64
    docs = render(home, namespace="ns", values={"image": {**image, "digest": digest}})
    assert runner_container(docs)["image"] == f"registry.example:5000/team/kube-stream-runner@{digest}"
    assert runner_container(render(home, namespace="ns", values={}))["image"] == "kube-stream-runner:0.1.0"


def test_update_strategy(home: Path) -> None:
    default = one(render(home, namespace="ns", values={}), "Deployment")["spec"]["strategy"]
    assert default == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # Recreate: the default rollingUpdate is left out (the apiserver refuses it with Recreate).
    recreate = render(home, namespace="ns", values={"updateStrategy": {"type": "Recreate"}})
    assert one(recreate, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_pod_disruption_budget_min_or_max(home: Path) -> None:
    assert one(render(home, namespace="ns", values={}), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    spec = one(
        render(home, namespace="ns", values={"podDisruptionBudget": {"minAvailable": "50%"}}), "PodDisruptionBudget"
    )["spec"]
    assert spec["minAvailable"] == "50%" and "maxUnavailable" not in spec
    spec = one(
        render(home, namespace="ns", values={"podDisruptionBudget": {"maxUnavailable": 2}}), "PodDisruptionBudget"
    )["spec"]
    assert spec["maxUnavailable"] == 2 and "minAvailable" not in spec


def test_service_monitor_namespace_interval_and_relabelings(home: Path) -> None:
    relabel = [{"targetLabel": "cluster", "replacement": "eu-1"}]
    drop = [{"action": "drop", "sourceLabels": ["__name__"], "regex": "ksr_kube_api_request_seconds_bucket"}]
    values = {
        "serviceMonitor": {
            "enabled": True,
            "namespace": "monitoring",
            "interval": "15s",
            "relabelings": relabel,
            "metricRelabelings": drop,
        }
    }
    monitor = one(render(home, namespace="ns", values=values), "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ns"]}  # still the release's Service
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["interval"], endpoint["relabelings"], endpoint["metricRelabelings"]) == ("15s", relabel, drop)
    plain = one(render(home, namespace="ns", values={"serviceMonitor": {"enabled": True}}), "ServiceMonitor")
    assert plain["metadata"]["namespace"] == "ns"
    assert "relabelings" not in plain["spec"]["endpoints"][0]


def test_network_policy_default_allows_egress_and_any_scraper(home: Path) -> None:
    assert "NetworkPolicy" not in {d["kind"] for d in render(home, namespace="ns", values={})}
    policy = one(render(home, namespace="ns", values={"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": SELECTOR}
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress not restricted by default
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert "egress" not in policy["spec"]


def test_network_policy_restricted(home: Path) -> None:
    policy = one(render(home, namespace="ns", values={"networkPolicy": HOOKS["networkPolicy"]}), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    scrapers = {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    }
    assert spec["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}], "from": [scrapers]},
        {"ports": [{"port": 9000, "protocol": "TCP"}]},
    ]
    tcp = [[p["port"] for p in rule["ports"] if p["protocol"] == "TCP"] for rule in spec["egress"]]
    assert tcp == [[53], [6379], [443, 6443], [80, 443], [4317]]
    assert [p["protocol"] for p in spec["egress"][0]["ports"]] == ["TCP", "UDP"]  # DNS both ways
    assert spec["egress"][-1]["to"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    # A destination narrowed to peers.
    narrowed = {**HOOKS["networkPolicy"], "egress": {"redis": {"to": [{"podSelector": {}}], "ports": [6379, 26379]}}}
    spec = one(render(home, namespace="ns", values={"networkPolicy": narrowed}), "NetworkPolicy")["spec"]
    redis = next(r for r in spec["egress"] if r["ports"][0]["port"] == 6379)
    assert redis == {
        "ports": [{"port": 6379, "protocol": "TCP"}, {"port": 26379, "protocol": "TCP"}],
        "to": [{"podSelector": {}}],
    }


def test_one_secret_shape_for_every_secret_setting(home: Path) -> None:
    keys = {"KSR_REDIS_PASSWORD": "redis-password", "KSR_REDIS_USERNAME": ""}
    docs = render(home, namespace="ns", values={"secrets": {"existingSecret": "ksr-secrets", "keys": keys}})
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in runner_container(docs)["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs == {
        "REDIS_URL": {"name": "ksr-secrets", "key": "REDIS_URL"},
        "KSR_WEBHOOK_SECRET": {"name": "ksr-secrets", "key": "KSR_WEBHOOK_SECRET", "optional": True},
        "KSR_REDIS_PASSWORD": {"name": "ksr-secrets", "key": "redis-password"},
    }
    assert "REDIS_URL" not in config_map(docs)["data"]  # the Secret's wins; not both
    # REDIS_URL not read from the Secret: redis.url stays in the ConfigMap.
    docs = render(
        home, namespace="ns", values={"secrets": {"existingSecret": "ksr-secrets", "keys": {"REDIS_URL": ""}}}
    )
    assert config_map(docs)["data"]["REDIS_URL"] == "redis://redis:6379/0"
    assert "REDIS_URL" not in {e["name"] for e in runner_container(docs)["env"]}


def test_the_runner_accepts_every_hooked_pod(home: Path) -> None:
    """The plain values of the everything-on rendering, loaded as the runner's settings (the
    Secret's value stands in here; tests/e2e/test_helm_install.py resolves it from a real one)."""
    docs = render(home, namespace="ns", values=HOOKS)
    env = {**config_map(docs)["data"], "POD_NAME": "ksr-0", "POD_NAMESPACE": "ns", "KSR_MAX_ACTIVE_JOBS": "7"}
    env.update({e["name"]: e["value"] for e in runner_container(docs)["env"] if "value" in e})
    settings = Settings.from_env({**env, "KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert (settings.kube.max_active_jobs, settings.state.ttl_seconds) == (7, 1209600)


def test_the_chart_readmes_example_renders(home: Path) -> None:
    readme = (CHART / "README.md").read_text()
    (example,) = [block.split("\n", 1)[1] for block in readme.split("```")[1:-1:2] if block.startswith("yaml")]
    docs = render(home, namespace="ns", values=yaml.safe_load(example))
    assert [c["name"] for c in pod_spec(docs)["containers"]] == ["runner", "proxy"]
    assert runner_container(docs)["env"][-1]["valueFrom"]["secretKeyRef"] == {
        "name": "platform-config",
        "key": "webhook-allow",
    }


def test_the_chart_readmes_install_command_renders(home: Path) -> None:
    """The README's `helm install` line, run as `helm template` with the same arguments."""
    import shlex

    readme = (CHART / "README.md").read_text()
    (command,) = [block.split("\n", 1)[1] for block in readme.split("```")[1:-1:2] if block.startswith("sh")]
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:2] == ["helm", "install"], argv
    done = subprocess.run(
        [str(build.bin_dir() / "helm"), "template", *argv[2:]],
        cwd=CHART.parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert runner_container(docs)["image"] == "registry.example/kube-stream-runner:0.1.0"


# -- still strict about typos; the hooks are typed ----------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"extraEnvVar": []}, "additional properties 'extraEnvVar' not allowed"),
        ({"sidecar": []}, "additional properties 'sidecar' not allowed"),
        ({"networkPolicy": {"enabeld": True}}, "additional properties 'enabeld' not allowed"),
        ({"serviceMonitor": {"relabeling": []}}, "additional properties 'relabeling' not allowed"),
        ({"secrets": {"keys": {"REDIS_ULR": "x"}}}, "additional properties 'REDIS_ULR' not allowed"),
        ({"secrets": {"redisUrlKey": "x"}}, "additional properties 'redisUrlKey' not allowed"),
        ({"updateStrategy": {"type": "OnDelete"}}, "/updateStrategy/type"),
        ({"extraEnvVars": [{"nme": "A", "value": "b"}]}, "/extraEnvVars/0': missing property 'name'"),
        ({"extraEnvVars": ["A=b"]}, "/extraEnvVars/0"),
        (
            {"extraEnvVars": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]},
            "/extraEnvVars/0/valueFrom/secretKeyRef': missing property 'key'",
        ),
        ({"extraEnvVars": [{"name": "A", "valueFrom": {"secretRef": {"name": "s"}}}]}, "'secretRef' not allowed"),
        ({"extraVolumes": [{"name": "v"}]}, "/extraVolumes/0"),
        ({"extraVolumes": [{"emptyDir": {}}]}, "/extraVolumes/0': missing property 'name'"),
        ({"extraVolumeMounts": [{"name": "v"}]}, "/extraVolumeMounts/0': missing property 'mountPath'"),
        ({"extraVolumeMounts": [{"name": "v", "mountPath": "/v", "readonly": True}]}, "'readonly' not allowed"),
        ({"sidecars": [{"name": "proxy"}]}, "/sidecars/0': missing property 'image'"),
        ({"initContainers": [{"image": "x"}]}, "/initContainers/0': missing property 'name'"),
        ({"sidecars": [{"name": "Proxy", "image": "x"}]}, "/sidecars/0/name"),
        ({"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}, "/podDisruptionBudget/maxUnavailable"),
        ({"extraEnvVarsSecret": "Not_A_Name"}, "/extraEnvVarsSecret"),
        ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
        # What the schema cannot see, the templates refuse naming the value.
        ({"extraEnvVars": [{"name": "POD_NAME", "value": "x"}]}, "extraEnvVars[0].name: POD_NAME is set by the chart"),
        (
            {"secrets": {"existingSecret": "s"}, "extraEnvVars": [{"name": "REDIS_URL", "value": "redis://x"}]},
            "extraEnvVars[0].name: REDIS_URL is set by the chart",
        ),
        (
            {"extraVolumes": [{"name": "tmp", "emptyDir": {}}]},
            "extraVolumes[0].name: tmp is one of the chart's volumes",
        ),
        ({"sidecars": [{"name": "runner", "image": "x"}]}, "container name runner is used twice"),
    ],
)
def test_typos_and_malformed_hooks_are_refused_naming_the_key(home: Path, values: dict[str, Any], message: str) -> None:
    stderr = refusal(home, values)
    assert message in stderr, stderr


def test_helm_lint_names_a_misspelt_key(home: Path) -> None:
    done = subprocess.run(
        [
            str(build.bin_dir() / "helm"),
            "lint",
            "--strict",
            str(CHART),
            "-f",
            str(values_file(home, {"extraVolume": []})),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "additional properties 'extraVolume' not allowed" in done.stdout + done.stderr


def test_helm_lint_passes_with_every_hook(home: Path) -> None:
    out = helm(
        home,
        "lint",
        "--strict",
        str(CHART),
        "-f",
        str(values_file(home, {**HOOKS, "serviceMonitor": {"enabled": True}})),
    )
    assert "0 chart(s) failed" in out


# -- the real kube-apiserver --------------------------------------------------------------------


def kubectl(kube: Any, *args: str, input: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "kubectl"), f"--kubeconfig={kube.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.kube
def test_apiserver_accepts_every_hook_under_pod_security_restricted(kube: Any, namespace: str, home: Path) -> None:
    label = subprocess.run(
        [
            str(Path(sys.executable).parent / "kubectl"),
            f"--kubeconfig={kube.kubeconfig}",
            "label",
            "namespace",
            namespace,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert label.returncode == 0, label.stderr
    docs = render(home, namespace=namespace, values=HOOKS)
    done = kubectl(kube, "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    assert done.returncode == 0, done.stderr
    assert "networkpolicy.networking.k8s.io/" in done.stdout
    assert len(done.stdout.strip().splitlines()) == len(docs), done.stdout
    template = one(docs, "Deployment")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hooks-pod-check", **template["metadata"]},
        "spec": {**template["spec"], "serviceAccountName": "default"},
    }
    done = kubectl(kube, "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(pod))
    assert done.returncode == 0, done.stderr
    # Not vacuous: a sidecar without its securityContext is refused by Pod Security.
    bare = {
        **pod,
        "spec": {**pod["spec"], "containers": [*pod["spec"]["containers"][:1], {"name": "bare", "image": "x"}]},
    }
    done = kubectl(kube, "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(bare))
    assert done.returncode != 0 and "violates PodSecurity" in done.stderr, done.stderr


def test_chart_metadata_has_no_placeholder_address() -> None:
    """The project has no public address written down anywhere (README, DESIGN, setup.cfg):
    the chart names none rather than a made-up one; set `home`/`sources` when it has one."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    urls = [u for u in [chart.get("home"), *chart.get("sources", [])] if u is not None]
    assert not [u for u in urls if "example" in u], urls
    assert chart["version"] == "0.2.0"  # 0.2.0: secrets.keys replaced redis.auth and secrets.*Key
