"""Offline checks of ``deploy/``: the Kubernetes manifests and the compose file.

Two kinds of checks:
1. Schemas: ``kubernetes-validate --strict -k 1.30`` over every object of the default kustomization
   (rendered here, see :func:`render`), and ``check-jsonschema`` with the compose specification.
2. What a schema cannot see: non-root and read-only pods with resources and probes, every ``WISP_*``
   variable defined by the ConfigMap/Secret and understood by ``wisp.config``, Services / Ingress /
   probes / NetworkPolicy pointing at ports that exist, the gateway's ``WISP_SERVICES`` naming real
   Services, the upload limit equal in the Ingress and the ConfigMap, the reference backing services
   agreeing with the URLs and credentials the Wisp pods use.

No network, no cluster, no Docker: a few seconds.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.30"

#: The parts of the default kustomization, in the order they are applied (docs/operations.md).
PARTS = ["config", "backing", "migrate", "services", "gateway"]
#: Kustomization fields the renderer below implements; anything else must fail loudly, not be ignored.
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources", "secretGenerator", "generatorOptions"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "PriorityClass", "CustomResourceDefinition", "IngressClass"}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
#: WISP_* variables set by the deployment although wisp/config.py does not read them (yet).
DECLARED_AHEAD = {"WISP_NATS_REPLICAS": "stream replicas (DESIGN §10); see docs/operations.md"}


# --------------------------------------------------------------------------------------------------
# Rendering: a small, strict subset of kustomize (no kustomize binary is installed here)


@dataclass
class Rendered:
    objects: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)          # resource files, in order
    kustomizations: list[Path] = field(default_factory=list)
    generated: list[dict[str, Any]] = field(default_factory=list)  # Secrets from secretGenerator


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as kustomize's secretGenerator reads them (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not KEY=VALUE"
        out[key.strip()] = value
    return out


def env_file(path: Path) -> Path:
    """The real file if an operator made it, else the committed example (what this test can see)."""
    return path if path.exists() else path.with_name(path.name + ".example")


def render(directory: Path, namespace: str | None = None, out: Rendered | None = None) -> Rendered:
    out = out if out is not None else Rendered()
    kfile = directory / "kustomization.yaml"
    kust = yaml.safe_load(kfile.read_text())
    unsupported = set(kust) - KUSTOMIZE_FIELDS
    assert not unsupported, f"{kfile}: {sorted(unsupported)} not understood by this test's renderer"
    out.kustomizations.append(kfile)
    namespace = kust.get("namespace", namespace)
    start = len(out.objects)
    for res in kust.get("resources", []):
        path = directory / res
        assert path.exists(), f"{kfile}: resource {res} does not exist"
        if path.is_dir():
            render(path, namespace, out)
        else:
            out.files.append(path)
            out.objects.extend(_load_all(path))
    if kust.get("secretGenerator"):
        assert (kust.get("generatorOptions") or {}).get("disableNameSuffixHash") is True, (
            f"{kfile}: generated Secrets need a fixed name (the parts are applied separately)")
    for gen in kust.get("secretGenerator", []):
        assert set(gen) <= {"name", "envs", "literals", "type"}, f"{kfile}: {gen}"
        data: dict[str, str] = {}
        for env in gen.get("envs", []):
            data.update(read_env_file(env_file(directory / env)))
        for literal in gen.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        secret = {"apiVersion": "v1", "kind": "Secret", "type": gen.get("type", "Opaque"),
                  "metadata": {"name": gen["name"]},
                  "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
        out.objects.append(secret)
        out.generated.append(secret)
    if namespace:
        for obj in out.objects[start:]:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    return out


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return render(K8S)


# --------------------------------------------------------------------------------------------------
# Helpers


def find(r: Rendered, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in r.objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(r: Rendered, kind: str, name: str) -> dict[str, Any]:
    found = find(r, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(r: Rendered, kinds: set[str] = WORKLOADS) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in r.objects:
        if obj["kind"] in kinds:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]


def config_data(r: Rendered) -> dict[str, str]:
    return dict(one(r, "ConfigMap", "wisp-config")["data"])


def secret_data(r: Rendered, name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in one(r, "Secret", name)["data"].items()}


def is_wisp(container: dict[str, Any]) -> bool:
    return container["image"].startswith("ghcr.io/wisp-pipeline/wisp:")


def container_env(r: Rendered, container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets from envFrom (ConfigMaps/Secrets) and env (literal values)."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(one(r, "ConfigMap", src["configMapRef"]["name"]).get("data") or {})
        if "secretRef" in src:
            env.update(secret_data(r, src["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)),
                                       item["value"])
        else:
            ref = item["valueFrom"]
            if "configMapKeyRef" in ref:
                env[item["name"]] = one(r, "ConfigMap", ref["configMapKeyRef"]["name"])["data"][
                    ref["configMapKeyRef"]["key"]]
            elif "secretKeyRef" in ref:
                env[item["name"]] = secret_data(r, ref["secretKeyRef"]["name"])[ref["secretKeyRef"]["key"]]
            else:
                env[item["name"]] = "<from field>"
    return env


def known_wisp_variables() -> set[str]:
    """The WISP_* variables wisp/config.py reads (``_get(env, "NAME")`` and its typed variants)."""
    source = (ROOT / "wisp" / "config.py").read_text()
    names = set(re.findall(r'_(?:get|int|bool|url)\(env,\s*"([A-Z0-9_]+)"', source))
    assert {"DB_URL", "STORE_URL", "NATS_URL", "SERVICES"} <= names, "wisp/config.py changed shape"
    return {"WISP_" + n for n in names}


def quantity(value: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert m and (m.group(2) in units or not m.group(2)), f"bad quantity {value!r}"
    return float(m.group(1)) * units.get(m.group(2), 1)


def nginx_size(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert m, f"bad nginx size {value!r}"
    return int(m.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2).lower()]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pods_selected(r: Rendered, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
    return [t for o in r.objects if o["kind"] in WORKLOADS - {"Job"}
            and o["metadata"].get("namespace") == namespace
            for t in [o["spec"]["template"]] if selects(selector, t["metadata"].get("labels", {}))]


def is_stage(deployment: dict[str, Any]) -> bool:
    return deployment["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "stage"


def command_of(r: Rendered, kind: str, name: str) -> list[str]:
    return list(one(r, kind, name)["spec"]["template"]["spec"]["containers"][0]["command"])


def has_port(pod: dict[str, Any], port: int | str) -> bool:
    ports = [p for c in pod["spec"]["containers"] for p in c.get("ports", [])]
    return any(p.get("name") == port or p["containerPort"] == port for p in ports)


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    assert users, "deploy/Dockerfile sets no USER"
    return int(users[-1].split(":")[0])


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR:?error} substitution."""
    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env and env[name] != "":
            return env[name]
        assert op != ":?", f"compose needs {name}: {arg}"
        return arg if op == ":-" else ""
    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", sub, text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    example = read_env_file(DEPLOY / "compose.env.example")
    return dict(yaml.safe_load(interpolate(COMPOSE.read_text(), example)))


# --------------------------------------------------------------------------------------------------
# 1. Schemas


def test_kustomization_covers_every_manifest_and_keeps_the_documented_order(rendered: Rendered) -> None:
    top = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert top["resources"] == PARTS
    manifests = {p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"
                 and "optional" not in p.relative_to(K8S).parts}
    assert manifests == set(rendered.files), "manifests outside the default kustomization (or missing)"
    namespaces = {yaml.safe_load(k.read_text()).get("namespace") for k in rendered.kustomizations}
    assert namespaces == {"wisp"}, "every part must be applicable on its own, in the same namespace"
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rendered.objects]
    assert len(names) == len(set(names)), "duplicate objects"


def test_every_object_validates_against_kubernetes_1_30_strict(rendered: Rendered) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    errors = []
    for obj in rendered.objects:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except Exception as exc:  # ValidationError, SchemaNotFoundError: both are failures here
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {str(exc).splitlines()[0]}")
    assert not errors, "\n".join(errors)


def test_kubernetes_validate_cli_accepts_the_files(rendered: Rendered, tmp_path: Path) -> None:
    """The command an operator runs (docs/operations.md), over the files and the generated Secrets."""
    exe = BIN / "kubernetes-validate"
    if not exe.exists():
        pytest.skip(f"{exe} not installed (make setup)")
    generated = tmp_path / "generated-secrets.yaml"
    generated.write_text(yaml.safe_dump_all(rendered.generated))
    proc = subprocess.run([str(exe), "--strict", "-k", K8S_VERSION, "--quiet",
                           *map(str, rendered.files), str(generated)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_file_validates_against_the_compose_spec() -> None:
    exe = BIN / "check-jsonschema"
    if not exe.exists():
        pytest.skip(f"{exe} not installed (make setup)")
    proc = subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------------
# 2. Pods: restricted, bounded, probed


def test_every_pod_is_non_root_read_only_and_restricted(rendered: Rendered) -> None:
    ns = one(rendered, "Namespace", "wisp")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for where, pod in workloads(rendered):
        spec = pod["spec"]
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, where
        assert psc.get("runAsUser", 1) != 0, where
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        assert not any("hostPath" in v for v in spec.get("volumes", [])), where
        for c in spec.get("initContainers", []) + spec["containers"]:
            csc = c.get("securityContext", {})
            assert csc.get("allowPrivilegeEscalation") is False, f"{where}/{c['name']}"
            assert csc.get("readOnlyRootFilesystem") is True, f"{where}/{c['name']}"
            assert csc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}/{c['name']}"
            assert csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{where}/{c['name']}"
            assert csc.get("runAsUser", psc.get("runAsUser", 1)) != 0, f"{where}/{c['name']}"
            assert not csc.get("privileged"), f"{where}/{c['name']}"
            assert ":latest" not in c["image"] and ":" in c["image"], f"{where}: pin the image tag"


def test_every_container_has_requests_and_limits(rendered: Rendered) -> None:
    for where, pod in workloads(rendered):
        for c in pod["spec"]["containers"]:
            res = c.get("resources", {})
            for resource in ("cpu", "memory"):
                request, limit = res.get("requests", {}).get(resource), res.get("limits", {}).get(resource)
                assert request and limit, f"{where}/{c['name']}: {resource} request and limit"
                assert quantity(limit) >= quantity(request), f"{where}/{c['name']}: {resource}"


def test_long_running_containers_have_probes_on_declared_ports(rendered: Rendered) -> None:
    for where, pod in workloads(rendered, {"Deployment", "StatefulSet"}):
        for c in pod["spec"]["containers"]:
            assert "readinessProbe" in c and "livenessProbe" in c, f"{where}/{c['name']}: probes"
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if not probe or "exec" in probe:
                    continue
                handler = probe.get("grpc") or probe.get("httpGet") or probe.get("tcpSocket")
                assert handler, f"{where}/{c['name']}: {kind} has no handler"
                assert has_port({"spec": {"containers": [c]}}, handler["port"]), (
                    f"{where}/{c['name']}: {kind} port {handler['port']} is not a container port")


def test_wisp_pods_use_the_image_user_scratch_space_and_instruments(rendered: Rendered) -> None:
    image = f"ghcr.io/wisp-pipeline/wisp:{project_version()}"
    uid = dockerfile_uid()
    cfg = config_data(rendered)
    seen = 0
    for where, pod in workloads(rendered):
        spec = pod["spec"]
        for c in [c for c in spec["containers"] if is_wisp(c)]:
            seen += 1
            assert c["image"] == image, f"{where}: image {c['image']} is not the package version {image}"
            assert spec["securityContext"]["runAsUser"] == uid, f"{where}: runAsUser != Dockerfile USER"
            assert spec.get("enableServiceLinks") is False, f"{where}: service links could shadow WISP_*"
            assert spec.get("serviceAccountName") == "wisp", where
            refs = {(k, v["name"]) for s in c["envFrom"] for k, v in s.items()}
            assert refs == {("configMapRef", "wisp-config"), ("secretRef", "wisp-secrets")}, where
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}
            for path in ("/tmp", cfg["WISP_DATA_DIR"]):
                assert "emptyDir" in mounts.get(path, {}), f"{where}: no emptyDir at {path}"
            if where.startswith("Deployment/"):
                instruments = mounts.get(cfg["WISP_INSTRUMENT_PATH"], {})
                assert instruments.get("configMap", {}).get("name") == "wisp-instruments", (
                    f"{where}: wisp-instruments not mounted at WISP_INSTRUMENT_PATH")
    assert seen >= 3, "migrate, ingest and gateway at least"
    assert one(rendered, "ConfigMap", "wisp-instruments")


def test_extra_instrument_descriptions_load(rendered: Rendered, tmp_path: Path) -> None:
    """What operators put in the wisp-instruments ConfigMap (and deploy/instruments/) must load."""
    from wisp.instruments import load_registry

    data = one(rendered, "ConfigMap", "wisp-instruments").get("data") or {}
    for key, text in data.items():
        assert key.endswith((".yaml", ".yml")), f"wisp-instruments key {key}: only *.yaml/*.yml are read"
        (tmp_path / key).write_text(text)
    load_registry([tmp_path, DEPLOY / "instruments"])  # raises ConfigError naming file and field


# --------------------------------------------------------------------------------------------------
# 3. Configuration: every WISP_* variable defined, known and valid


def test_every_referenced_wisp_variable_is_defined(rendered: Rendered) -> None:
    for where, pod in workloads(rendered):
        for c in pod["spec"]["containers"]:
            env = container_env(rendered, c)
            text = yaml.safe_dump({k: c.get(k) for k in ("command", "args", "env")})
            for name in re.findall(r"\$\((\w+)\)", text):
                assert name in env, f"{where}/{c['name']}: $({name}) is not defined"
            for item in c.get("env", []):
                ref = item.get("valueFrom", {})
                for kind, key in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if kind in ref:
                        obj = one(rendered, key, ref[kind]["name"])
                        assert ref[kind]["key"] in obj["data"], f"{where}: {ref[kind]} missing"
            for src in c.get("envFrom", []):
                if "secretRef" in src:
                    assert find(rendered, "Secret", src["secretRef"]["name"]), where


def test_wisp_variables_are_known_to_wisp_config(rendered: Rendered) -> None:
    known = known_wisp_variables() | set(DECLARED_AHEAD)
    defined = set(config_data(rendered)) | set(secret_data(rendered, "wisp-secrets"))
    wisp_vars = {n for n in defined if n.startswith("WISP_")}
    assert wisp_vars <= known, f"not read by wisp/config.py (typo?): {sorted(wisp_vars - known)}"
    assert not set(config_data(rendered)) & set(secret_data(rendered, "wisp-secrets")), "defined twice"
    secrets = set(secret_data(rendered, "wisp-secrets"))
    assert {"WISP_DB_URL", "WISP_S3_ACCESS_KEY", "WISP_S3_SECRET_KEY"} <= secrets, "credentials in Secret"
    assert not {n for n in config_data(rendered) if re.search("PASSWORD|SECRET|_KEY$|DB_URL", n)}


def test_wisp_settings_load_in_every_wisp_container(rendered: Rendered) -> None:
    from wisp.config import load_settings

    cfg = config_data(rendered)
    for where, pod in workloads(rendered):
        for c in [c for c in pod["spec"]["containers"] if is_wisp(c)]:
            settings = load_settings(container_env(rendered, c))  # raises ConfigError naming the variable
            assert settings.db_url.startswith("postgresql://"), where
            assert settings.store_url.startswith("s3://"), where
            assert settings.max_upload_bytes == int(cfg["WISP_MAX_UPLOAD_BYTES"]), where
            assert str(settings.data_dir) == cfg["WISP_DATA_DIR"], where
            assert settings.services, where


# --------------------------------------------------------------------------------------------------
# 4. Networking: Services, Ingress, WISP_SERVICES, NetworkPolicy


def test_services_select_pods_that_have_their_target_ports(rendered: Rendered) -> None:
    for svc in find(rendered, "Service"):
        where = f"Service/{svc['metadata']['name']}"
        pods = pods_selected(rendered, svc["metadata"]["namespace"], svc["spec"].get("selector", {}))
        assert pods, f"{where} selects no pod"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in pods:
                assert has_port(pod, target), f"{where}: targetPort {target} not on the selected pods"


def test_ingress_routes_to_the_gateway_and_allows_the_upload_limit(rendered: Rendered) -> None:
    cfg = config_data(rendered)
    ingresses = find(rendered, "Ingress")
    assert ingresses
    for ing in ingresses:
        body = ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        assert nginx_size(body) == int(cfg["WISP_MAX_UPLOAD_BYTES"]), (
            f"proxy-body-size {body} != WISP_MAX_UPLOAD_BYTES {cfg['WISP_MAX_UPLOAD_BYTES']}")
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = one(rendered, "Service", backend["name"])
                port = backend["port"].get("name", backend["port"].get("number"))
                assert any(p.get("name") == port or p["port"] == port for p in svc["spec"]["ports"]), (
                    f"Ingress backend port {port} not on Service/{backend['name']}")
                assert svc["spec"]["selector"]["app.kubernetes.io/name"] == "gateway"
    gateway = one(rendered, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["command"][-2:] == ["--port", str(gateway["ports"][0]["containerPort"])]


def test_gateway_service_map_names_existing_stage_services(rendered: Rendered) -> None:
    cfg = config_data(rendered)
    grpc_port = int(cfg["WISP_GRPC_PORT"])
    listed = {}
    for item in cfg["WISP_SERVICES"].split(","):
        name, _, address = item.strip().partition("=")
        host, _, port = address.rpartition(":")
        listed[name] = host
        svc = one(rendered, "Service", host.removeprefix("dns:///"))
        svc_port = [p for p in svc["spec"]["ports"] if p["port"] == int(port)]
        assert svc_port, f"WISP_SERVICES {item}: Service/{host} has no port {port}"
        for pod in pods_selected(rendered, svc["metadata"]["namespace"], svc["spec"]["selector"]):
            (c,) = pod["spec"]["containers"]
            assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "stage", item
            ports = {p.get("name"): p["containerPort"] for p in c["ports"]}
            target = svc_port[0]["targetPort"]
            assert ports.get(target, target) == grpc_port, f"{item}: not WISP_GRPC_PORT {grpc_port}"
            assert c["readinessProbe"]["grpc"]["port"] == grpc_port, item
            assert c["livenessProbe"]["grpc"]["port"] == grpc_port, item
    stages = {d["metadata"]["name"] for d in find(rendered, "Deployment") if is_stage(d)}
    assert stages == set(listed), "every stage Deployment must be in WISP_SERVICES (the gateway's /health)"


def test_network_policy_lets_only_the_gateway_reach_the_stages(rendered: Rendered) -> None:
    (policy,) = find(rendered, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    stage_pods = [d["spec"]["template"] for d in find(rendered, "Deployment") if is_stage(d)]
    assert stage_pods
    for d in find(rendered, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert selects(spec["podSelector"]["matchLabels"], labels) == is_stage(d), d["metadata"]["name"]
    (rule,) = spec["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}, "pods of this namespace only"
    allowed = [d["metadata"]["name"] for d in find(rendered, "Deployment")
               if selects(source["podSelector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])]
    assert allowed == ["gateway"]
    for port in rule["ports"]:
        assert all(has_port(pod, port["port"]) for pod in stage_pods), f"port {port['port']}"


# --------------------------------------------------------------------------------------------------
# 5. Availability and scaling


def test_disruption_budgets_and_autoscaler(rendered: Rendered) -> None:
    pdbs = find(rendered, "PodDisruptionBudget")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in find(rendered, "HorizontalPodAutoscaler")}
    for obj in find(rendered, "Deployment") + find(rendered, "StatefulSet"):
        name = obj["metadata"]["name"]
        labels = obj["spec"]["template"]["metadata"]["labels"]
        replicas = hpas[name]["spec"]["minReplicas"] if name in hpas else obj["spec"].get("replicas", 1)
        covering = [p for p in pdbs if selects(p["spec"]["selector"]["matchLabels"], labels)]
        if replicas > 1:
            assert len(covering) == 1, f"{name}: one PodDisruptionBudget"
            assert "maxUnavailable" in covering[0]["spec"], f"{name}: maxUnavailable never blocks drains"
    assert "ingest" in hpas
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        deployment = one(rendered, "Deployment", name)
        assert "replicas" not in deployment["spec"], f"{name}: the HPA owns replicas (apply would reset it)"
        assert hpa["spec"]["minReplicas"] >= 2
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            assert "cpu" in c["resources"]["requests"], f"{name}: CPU utilisation needs a CPU request"


def test_optional_keda_object_is_outside_the_default_set_and_consistent(rendered: Rendered) -> None:
    path = K8S / "optional" / "keda-ingest.yaml"
    assert path not in rendered.files
    (scaled,) = _load_all(path)
    assert scaled["kind"] == "ScaledObject" and not find(rendered, "ScaledObject")
    target = one(rendered, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert target["metadata"]["namespace"] == scaled["metadata"]["namespace"]
    (jetstream,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "nats-jetstream"]
    host, _, port = jetstream["metadata"]["natsServerMonitoringEndpoint"].rpartition(":")
    svc = one(rendered, "Service", host.split(".")[0])
    assert any(p["port"] == int(port) for p in svc["spec"]["ports"])
    assert jetstream["metadata"]["stream"] in (ROOT / "wisp" / "bus" / "streams.py").read_text()


# --------------------------------------------------------------------------------------------------
# 6. The reference backing services agree with what the Wisp pods are told


def test_wisp_endpoints_resolve_to_the_reference_backing_services(rendered: Rendered) -> None:
    cfg = config_data(rendered)
    secrets = secret_data(rendered, "wisp-secrets")
    backing = secret_data(rendered, "wisp-backing-secrets")
    db = urlparse(secrets["WISP_DB_URL"])
    nats = urlparse(cfg["WISP_NATS_URL"])
    s3_host, _, s3_port = cfg["WISP_S3_ENDPOINT"].rpartition(":")
    for host, port in ((db.hostname, db.port), (nats.hostname, nats.port), (s3_host, int(s3_port))):
        svc = one(rendered, "Service", str(host))
        assert any(p["port"] == port for p in svc["spec"]["ports"]), f"Service/{host} has no port {port}"
    assert (db.username, db.password, db.path.lstrip("/")) == (
        backing["POSTGRES_USER"], backing["POSTGRES_PASSWORD"], backing["POSTGRES_DB"])
    assert (secrets["WISP_S3_ACCESS_KEY"], secrets["WISP_S3_SECRET_KEY"]) == (
        backing["MINIO_ROOT_USER"], backing["MINIO_ROOT_PASSWORD"])


def test_nats_cluster_is_durable(rendered: Rendered) -> None:
    cfg = config_data(rendered)
    sts = one(rendered, "StatefulSet", "nats")
    replicas = sts["spec"]["replicas"]
    assert replicas == 3 and int(cfg["WISP_NATS_REPLICAS"]) == replicas
    conf = one(rendered, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, flags=re.M), "fsync before ack"
    store = re.search(r"store_dir:\s*(\S+)", conf)
    assert store
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    pvc_names = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert any(m["mountPath"] == store.group(1) and m["name"] in pvc_names for m in c["volumeMounts"])
    headless = sts["spec"]["serviceName"]
    assert one(rendered, "Service", headless)["spec"]["clusterIP"] == "None"
    routes = re.findall(r"nats://([\w.-]+):(\d+)", conf)
    assert sorted(h for h, _ in routes) == [f"nats-{i}.{headless}" for i in range(replicas)]


def test_minio_is_distributed_over_its_statefulset(rendered: Rendered) -> None:
    sts = one(rendered, "StatefulSet", "minio")
    replicas = sts["spec"]["replicas"]
    assert replicas == 4 and sts["spec"]["podManagementPolicy"] == "Parallel"
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    (pool,) = [a for a in c["args"] if "{0..." in a]
    m = re.fullmatch(r"http://minio-\{0\.\.\.(\d+)\}\.([\w-]+)\.([\w-]+)\.svc\.cluster\.local"
                     r":(\d+)(/\S+)", pool)
    assert m, pool
    assert int(m.group(1)) == replicas - 1
    assert m.group(2) == sts["spec"]["serviceName"] and m.group(3) == sts["metadata"]["namespace"]
    assert any(p["containerPort"] == int(m.group(4)) for p in c["ports"])
    assert any(v["mountPath"] == m.group(5) for v in c["volumeMounts"])


def test_migration_job_runs_wisp_migrate(rendered: Rendered) -> None:
    job = one(rendered, "Job", "wisp-migrate")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["containers"][0]["command"] == ["wisp", "migrate"]


# --------------------------------------------------------------------------------------------------
# 7. Compose and Dockerfile


def test_compose_stack_matches_the_kubernetes_one(rendered: Rendered, compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "minio", "nats", "migrate", "ingest", "gateway"} <= set(services)
    assert "-js" in services["nats"]["command"]
    k8s_commands = {
        "migrate": command_of(rendered, "Job", "wisp-migrate"),
        "ingest": command_of(rendered, "Deployment", "ingest"),
        "gateway": command_of(rendered, "Deployment", "gateway"),
    }
    known = known_wisp_variables() | set(DECLARED_AHEAD)
    cfg = config_data(rendered)
    image = f"ghcr.io/wisp-pipeline/wisp:{project_version()}"
    for name, command in k8s_commands.items():
        svc = services[name]
        assert svc["image"] == image and svc["command"] == command, name
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        env = {k: str(v) for k, v in svc["environment"].items()}
        assert {k for k in env if k.startswith("WISP_")} <= known, name
        for key in ("WISP_MAX_UPLOAD_BYTES", "WISP_GRPC_PORT", "WISP_DATA_DIR", "WISP_INSTRUMENT_PATH"):
            assert env[key] == cfg[key], f"{name}: {key} differs from the ConfigMap"
        for item in env["WISP_SERVICES"].split(","):
            host = item.partition("=")[2].rpartition(":")[0]
            assert host in services, f"{name}: WISP_SERVICES host {host} is not a compose service"
        from wisp.config import load_settings

        load_settings(env)
    assert services["ingest"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["gateway"]["depends_on"]["ingest"]["condition"] == "service_healthy"
    assert "sync_interval: always" in compose["configs"]["nats-conf"]["content"]


def test_dockerfile_builds_the_package_as_a_non_root_user(rendered: Rendered) -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"python:3\.11-slim", text)
    assert dockerfile_uid() > 0
    assert re.search(r"pip install -r requirements\.lock", text)
    assert re.search(r"pip install --no-deps \.", text)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for needed in ("pyproject.toml", "requirements.lock", "wisp/**", "services/**", "gateway/**"):
        assert f"!{needed}" in ignore, f"the build context must keep {needed}"
