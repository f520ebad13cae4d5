"""deploy/ validated without a Docker engine or a cluster.

* every Kubernetes document passes the Kubernetes OpenAPI schemas ``kubernetes-validate``
  ships (strict: unknown fields are errors);
* ``compose.yaml`` passes the compose-spec JSON schema (vendored by ``check-jsonschema``);
* the directories, user ids, ports, volumes and files named by the Dockerfile, compose,
  the Kubernetes manifests and the baked configuration agree with each other;
* the hardening holds: non-root, read-only root filesystem, dropped capabilities,
  resources, pinned images, ReadWriteMany shared volumes, a PodDisruptionBudget per
  workload, metrics off the public paths.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from bandit.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30.0"  # the oldest release these manifests support (preStop exec, PDB v1, HPA v2)
BAKED = load_config(DEPLOY / "switchboard.toml", env={})
DATA = Path("/var/lib/switchboard")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _k8s() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _k8s_named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _k8s() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _workloads() -> list[dict[str, Any]]:
    return [d for d in _k8s() if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = doc["spec"]["template"]["spec"]
    return pod


def _ours(container: dict[str, Any]) -> bool:
    return str(container["image"]).startswith("switchboard:")


def _dockerfile() -> dict[str, Any]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    (install,) = [ln for ln in text.splitlines() if ln.startswith("RUN install -d")]
    words = install.split()
    owner = (words[words.index("-o") + 1], words[words.index("-g") + 1])
    mode = words[words.index("-m") + 1]
    dirs = {w for w in words if w.startswith("/")}
    (user,) = re.findall(r"^USER (\S+)$", text, re.M)
    (expose,) = re.findall(r"^EXPOSE (.+)$", text, re.M)
    copies = dict(re.findall(r"^COPY (\S+) (\S+)$", text, re.M))
    return {"dirs": dirs, "owner": owner, "mode": mode, "user": user,
            "ports": {int(p) for p in expose.split()}, "copies": copies}


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("doc", _k8s(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_k8s_manifest_passes_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_k8s_schema_validation_can_fail() -> None:
    bad = json.loads(json.dumps(_k8s_named("Deployment", "switchboard-learner")))
    bad["spec"]["replicas"] = "two"
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def test_compose_passes_the_compose_spec_schema() -> None:
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    bad = _compose()
    bad["services"]["server"]["depends_on"] = {"bootstrap": {"condition": "finished"}}
    assert list(validator.iter_errors(bad)), "the schema check must be able to fail"


# --------------------------------------------------------------------------- agreement


def test_dockerfile_creates_every_directory_the_config_and_volumes_use() -> None:
    df = _dockerfile()
    assert df["owner"] == ("10001", "10001") and df["user"] == "10001:10001"
    assert df["mode"] == "0750"
    configured = {BAKED.learner.state_dir, BAKED.serve.snapshot_dir, BAKED.serve.spill_dir}
    assert configured <= df["dirs"], configured - df["dirs"]
    mounted = set()
    for svc in _compose()["services"].values():
        for vol in svc.get("volumes", []):
            target = vol.split(":")[1]
            if target.startswith(str(DATA)):
                mounted.add(target)
    for doc in _workloads():
        for c in _pod(doc).get("initContainers", []) + _pod(doc)["containers"]:
            for m in c.get("volumeMounts", []):
                if m["mountPath"].startswith(str(DATA)):
                    mounted.add(m["mountPath"])
    assert mounted and mounted <= df["dirs"], f"mounted but not created: {mounted - df['dirs']}"
    assert mounted == configured, "every configured directory is a volume, and only those"


def test_user_ids_agree() -> None:
    uid, gid = (int(x) for x in _dockerfile()["user"].split(":"))
    for name, svc in _compose()["services"].items():
        if str(svc.get("image", "")).startswith("switchboard:"):
            assert svc["user"] == f"{uid}:{gid}", name
    for doc in _workloads():
        pod = _pod(doc)
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (uid, gid, gid), doc["metadata"]["name"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_ports_agree() -> None:
    df_ports = _dockerfile()["ports"]
    serve_port, metrics_port = BAKED.serve.port, BAKED.learner.metrics_port
    assert {serve_port, metrics_port, 8501} <= df_ports
    services = _compose()["services"]
    assert int(_flag(services["server"]["command"], "--port")) == serve_port
    assert f":{serve_port}/readyz" in " ".join(services["server"]["healthcheck"]["test"])
    assert f":{metrics_port}/" in " ".join(services["learner"]["healthcheck"]["test"])
    dash_port = int(_flag(services["dashboard"]["command"], "--port"))
    assert f":{dash_port}/" in " ".join(services["dashboard"]["healthcheck"]["test"])
    assert f"server server:{serve_port}" in (DEPLOY / "nginx.conf").read_text()
    assert f"server dashboard:{dash_port};" in (DEPLOY / "dashboard-proxy.conf").read_text()
    assert "listen 8080;" in (DEPLOY / "dashboard-proxy.conf").read_text()
    assert services["dashboard-proxy"]["ports"] == ["127.0.0.1:8501:8080"]
    assert "ports" not in services["dashboard"], "the dashboard is reachable only through its proxy"

    server = _pod(_k8s_named("StatefulSet", "switchboard-server"))["containers"][0]
    assert int(_flag(server["args"], "--port")) == serve_port
    assert server["ports"] == [{"name": "http", "containerPort": serve_port}]
    learner = _pod(_k8s_named("Deployment", "switchboard-learner"))["containers"][0]
    assert learner["ports"] == [{"name": "metrics", "containerPort": metrics_port}]
    dashboard, proxy = _pod(_k8s_named("Deployment", "switchboard-dashboard"))["containers"]
    assert _flag(dashboard["args"], "--host") == "127.0.0.1" and "ports" not in dashboard
    assert int(_flag(dashboard["args"], "--port")) == dash_port
    assert proxy["ports"] == [{"name": "http", "containerPort": 8080}]
    for doc in _k8s():
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", doc["metadata"]["name"]
        annotations = doc.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
        if "prometheus.io/port" in annotations:
            ports = [p["containerPort"] for c in _pod(doc)["containers"] for p in c.get("ports", [])]
            assert int(annotations["prometheus.io/port"]) in ports


def test_metrics_stay_internal() -> None:
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"location = /metrics \{\s*return 404;", nginx)
    assert BAKED.learner.metrics_host == "127.0.0.1"
    learner = _pod(_k8s_named("Deployment", "switchboard-learner"))["containers"][0]
    (host,) = [e for e in learner["env"] if e["name"] == "SWITCHBOARD_LEARNER__METRICS_HOST"]
    assert host["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_volumes_and_files_agree() -> None:
    for doc in _workloads():
        pod = _pod(doc)
        defined = {v["name"] for v in pod.get("volumes", [])}
        defined |= {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for c in pod.get("initContainers", []) + pod["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in defined, f"{doc['metadata']['name']}/{c['name']}: {m['name']}"
        for v in pod.get("volumes", []):
            if "persistentVolumeClaim" in v:
                claim = _k8s_named("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
                # shared by several pods: must be ReadWriteMany
                assert claim["spec"]["accessModes"] == ["ReadWriteMany"], claim["metadata"]["name"]
            if "configMap" in v:
                _k8s_named("ConfigMap", v["configMap"]["name"])
            if "secret" in v:
                _k8s_named("Secret", v["secret"]["secretName"])
    compose = _compose()
    declared = set(compose["volumes"])
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if not source.startswith("."):
                assert source in declared, f"{name}: {source}"
            else:
                assert (DEPLOY / source).exists(), f"{name}: {source}"
        for key in ("secrets", "configs"):
            for ref in svc.get(key, []):
                assert (ref if isinstance(ref, str) else ref["source"]) in compose[key], name
    for conf in compose["configs"].values():
        assert (DEPLOY / conf["file"]).is_file()


def test_arms_seed_file_is_one_list_everywhere() -> None:
    arms = json.loads((DEPLOY / "arms.json").read_text())
    k8s_arms = json.loads(_k8s_named("ConfigMap", "switchboard-arms")["data"]["arms.json"])
    assert k8s_arms == arms
    assert _dockerfile()["copies"]["deploy/arms.json"] == "/etc/switchboard/arms.json"
    compose = _compose()
    (target,) = [c["target"] for c in compose["services"]["bootstrap"]["configs"]]
    assert compose["services"]["bootstrap"]["command"] == ["arms", "seed", target]
    proxy_conf = _k8s_named("ConfigMap", "switchboard-dashboard-proxy")["data"]["nginx.conf"]
    assert proxy_conf == (DEPLOY / "dashboard-proxy.conf").read_text()
    for doc in _workloads():
        pod = _pod(doc)
        mounts = {m["name"]: m["mountPath"] for c in pod.get("initContainers", []) for m in c["volumeMounts"]}
        for c in pod.get("initContainers", []):
            if c["args"][:2] == ["arms", "seed"]:
                assert Path(c["args"][2]).parent == Path(mounts["arms"])
                assert {"name": "snapshots", "mountPath": BAKED.serve.snapshot_dir} in c["volumeMounts"]


def test_token_files_come_from_mounted_secrets() -> None:
    server = _compose()["services"]["server"]
    env = server["environment"]
    for var, secret in (("SWITCHBOARD_SERVE__TOKENS_FILE", "tokens"),
                        ("SWITCHBOARD_SERVE__ADMIN_TOKENS_FILE", "admin-tokens")):
        assert env[var] == f"/run/secrets/{secret}" and secret in server["secrets"]
    assert "TOKENS" not in " ".join(k for k in env if not k.endswith("_FILE"))
    pod = _pod(_k8s_named("StatefulSet", "switchboard-server"))
    (c,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    (tokens_vol,) = [v for v in pod["volumes"] if v["name"] == "tokens"]
    keys = set(_k8s_named("Secret", tokens_vol["secret"]["secretName"])["stringData"])
    for e in c["env"]:
        if e["name"].endswith("TOKENS_FILE"):
            path = Path(e["value"])
            assert str(path.parent) == mounts["tokens"] and path.name in keys
    for doc in _k8s():
        text = json.dumps(doc)
        assert "SWITCHBOARD_SERVE__TOKENS\"" not in text and "SWITCHBOARD_SERVE__ADMIN_TOKENS\"" not in text


# --------------------------------------------------------------------------- hardening


def _all_images() -> list[str]:
    images = [str(s["image"]) for s in _compose()["services"].values()]
    for doc in _workloads():
        images += [c["image"] for c in _pod(doc).get("initContainers", []) + _pod(doc)["containers"]]
    return images


def test_images_are_pinned_by_tag() -> None:
    for image in _all_images():
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, image


def test_containers_are_hardened_and_bounded() -> None:
    for doc in _workloads():
        pod = _pod(doc)
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{doc['metadata']['name']}/{c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{where}: writable /tmp"
    for name, svc in _compose()["services"].items():
        if str(svc["image"]).startswith(("switchboard:", "nginxinc/nginx-unprivileged:")):
            assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
            assert any(t.startswith("/tmp") for t in svc["tmpfs"]), name
    for conf in ("nginx.conf", "dashboard-proxy.conf"):
        assert "pid /tmp/nginx.pid;" in (DEPLOY / conf).read_text(), f"{conf}: unprivileged nginx"


def test_every_long_running_workload_has_a_disruption_budget() -> None:
    pdbs = [d for d in _k8s() if d["kind"] == "PodDisruptionBudget"]
    for doc in _k8s():
        if doc["kind"] in ("Deployment", "StatefulSet") and doc["spec"]["replicas"] > 1:
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert any(p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs), \
                doc["metadata"]["name"]


def test_spill_survives_the_pod() -> None:
    server = _k8s_named("StatefulSet", "switchboard-server")
    (claim,) = server["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spill"
    assert server["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                                      "whenScaled": "Retain"}
    assert not any("emptyDir" in v and v["name"] == "spill" for v in _pod(server)["volumes"])
    assert "spill:/var/lib/switchboard/spill" in _compose()["services"]["server"]["volumes"]


def test_dashboard_is_behind_authentication() -> None:
    conf = (DEPLOY / "dashboard-proxy.conf").read_text()
    assert "auth_basic_user_file /run/secrets/dashboard-htpasswd;" in conf
    # only the health answer is served without credentials
    unauthenticated = re.findall(r"location ([^{]+)\{(?:(?!auth_basic)[^}])*\}", conf)
    assert sorted(u.strip() for u in unauthenticated) == ["= /_stcore/health", "= /proxy-health"]
    proxy = _pod(_k8s_named("Deployment", "switchboard-dashboard"))["containers"][1]
    assert {"name": "htpasswd", "mountPath": "/run/secrets/dashboard-htpasswd", "subPath": "htpasswd",
            "readOnly": True} in proxy["volumeMounts"]
    service = _k8s_named("Service", "switchboard-dashboard")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_network_policies_keep_internal_ports_internal() -> None:
    learner = _k8s_named("NetworkPolicy", "switchboard-learner")["spec"]
    assert learner["podSelector"]["matchLabels"] == {"app": "switchboard-learner"}
    (rule,) = learner["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": BAKED.learner.metrics_port}]
    assert all("namespaceSelector" in peer for peer in rule["from"])
    dashboard = _k8s_named("NetworkPolicy", "switchboard-dashboard")["spec"]
    (rule,) = dashboard["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def _probe_path(probe: dict[str, Any]) -> str:
    if "httpGet" in probe:
        return str(probe["httpGet"]["path"])
    return str(re.findall(r"http://[^/]+(/[^'\"]+)", " ".join(probe["exec"]["command"]))[0])


def test_liveness_and_readiness_are_separate_probes() -> None:
    expected = {  # (workload, container): (liveness path, readiness path or None)
        ("switchboard-server", "server"): ("/healthz", "/readyz"),
        ("switchboard-learner", "learner"): ("/livez", "/readyz"),
        ("switchboard-dashboard", "dashboard"): ("/_stcore/health", None),
        ("switchboard-dashboard", "auth-proxy"): ("/proxy-health", "/_stcore/health"),
    }
    seen = {}
    for doc in _workloads():
        for c in _pod(doc)["containers"]:
            live = _probe_path(c["livenessProbe"])
            ready = _probe_path(c["readinessProbe"]) if "readinessProbe" in c else None
            seen[(doc["metadata"]["name"], c["name"])] = (live, ready)
    assert seen == expected
