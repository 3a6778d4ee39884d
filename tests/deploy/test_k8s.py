"""The kustomize base in deploy/k8s/base: every resource its kustomization.yaml lists, validated
offline against the Kubernetes OpenAPI schemas kubernetes-validate bundles, then checked for
what Tessera needs (probes, sizing, settings, commands the CLI accepts)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.cli_args import parse

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
K8S_VERSION = "1.32.0"  # bundled by kubernetes-validate; strict: unknown fields are errors


@pytest.fixture(scope="module")
def resources() -> dict[tuple[str, str], dict]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk, "every manifest is listed, every listed file exists"
    out = {}
    for name in listed:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out


def _pod(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def _containers(resources) -> list[tuple[str, dict]]:
    return [(doc["metadata"]["name"], c) for doc in resources.values()
            if doc["kind"] in ("Deployment", "Job") for c in _pod(doc)["containers"]]


def test_every_manifest_validates_against_the_kubernetes_schema(resources):
    for key, doc in resources.items():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{key}: {'.'.join(map(str, e.path))}: {e.message}")


def test_the_validator_rejects_a_misplaced_field(resources):
    doc = yaml.safe_load(yaml.safe_dump(resources["Deployment", "tessera-scorer"]))
    doc["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_scorer_probes_liveness_on_healthz_and_readiness_on_readyz(resources):
    (c,) = _pod(resources["Deployment", "tessera-scorer"])["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"]["port"] in ports
    port = c["args"][c["args"].index("--port") + 1]
    assert ports[c["livenessProbe"]["httpGet"]["port"]] == int(port)
    assert c["args"][c["args"].index("--host") + 1] == "0.0.0.0"


def test_scorer_service_and_hpa_target_the_scorer(resources):
    scorer = resources["Deployment", "tessera-scorer"]
    labels = scorer["spec"]["template"]["metadata"]["labels"]
    svc = resources["Service", "tessera-scorer"]
    assert svc["spec"]["selector"].items() <= labels.items()
    (c,) = _pod(scorer)["containers"]
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= {p["name"] for p in c["ports"]}
    hpa = resources["HorizontalPodAutoscaler", "tessera-scorer"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "tessera-scorer"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert c["resources"]["requests"]["cpu"], "CPU utilisation is a share of the request"
    assert "replicas" not in scorer["spec"] or (
        hpa["spec"]["minReplicas"] <= scorer["spec"]["replicas"] <= hpa["spec"]["maxReplicas"])


def test_worker_replicas_match_the_source_partitions(resources):
    from tessera.cli_streams import load_repo

    worker = resources["Deployment", "tessera-worker"]
    repo_file = resources["ConfigMap", "tessera-settings"]["data"]["TESSERA_REPO"]
    repo = load_repo(ROOT / repo_file)
    partitions = max(s.partitions for s in repo.sources.values())
    assert worker["spec"]["replicas"] == partitions, "idle workers or unowned partitions"
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_every_container_is_sized_configured_and_runs_a_real_command(resources):
    configmaps = {n for k, n in resources if k == "ConfigMap"}
    secrets = {n for k, n in resources if k == "Secret"}
    claims = {n for k, n in resources if k == "PersistentVolumeClaim"}
    for name, c in _containers(resources):
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{name}: {kind}"
        refs = c["envFrom"]
        assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} <= configmaps
        assert {r["secretRef"]["name"] for r in refs if "secretRef" in r} <= secrets
        assert "command" not in c, "the image's entrypoint is tessera; give args"
        parse(c["args"])
    for doc in resources.values():
        if doc["kind"] in ("Deployment", "Job"):
            pod = _pod(doc)
            assert pod["securityContext"]["runAsNonRoot"] is True
            for v in pod["volumes"]:
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in claims
            home = resources["ConfigMap", "tessera-settings"]["data"]["TESSERA_HOME"]
            mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
            assert home in mounts, f"{doc['metadata']['name']} does not mount TESSERA_HOME"


def test_a_token_job_runs_before_the_scorer_listens_beyond_loopback(resources):
    (scorer,) = _pod(resources["Deployment", "tessera-scorer"])["containers"]
    assert scorer["args"][scorer["args"].index("--host") + 1] == "0.0.0.0"
    (token,) = _pod(resources["Job", "tessera-token"])["containers"]
    assert parse(token["args"]) == ["tokens", "create"] and "--if-missing" in token["args"]


def test_shared_home_is_read_write_many(resources):
    (pvc,) = [d for (k, _), d in resources.items() if k == "PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def _kustomize(path: Path) -> list[dict]:
    import shutil
    import subprocess

    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if not (kubectl or kustomize):
        pytest.skip("rendering needs kubectl (built-in kustomize) or kustomize on PATH")
    cmd = [kustomize, "build", str(path)] if kustomize else [kubectl, "kustomize", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_base_and_example_overlay_render_and_validate(tmp_path, resources):
    import shutil

    k8s = tmp_path / "k8s"
    shutil.copytree(ROOT / "deploy" / "k8s", k8s)
    overlay = k8s / "overlays" / "example"
    shutil.copy(overlay / "redis.env.example", overlay / "redis.env")
    base = _kustomize(k8s / "base")
    assert {(d["kind"], d["metadata"]["name"]) for d in base} == set(resources)
    rendered = _kustomize(overlay)
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "tessera"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tessera"
    secret = next(d for d in rendered if d["kind"] == "Secret")
    assert "REDIS_URL" in secret["data"]
    images = {c["image"] for d in rendered if d["kind"] in ("Deployment", "Job")
              for c in _pod(d)["containers"]}
    assert images == {"registry.example.com/tessera:0.1.0"}
