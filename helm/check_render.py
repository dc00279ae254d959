#!/usr/bin/env python3
"""Checks one `helm template` render of the facegate chart (called by helm/check.sh).

usage: check_render.py RENDER.yaml OUTDIR

Writes OUTDIR/k8s.yaml (every object but the ServiceMonitor, for kubernetes-validate), OUTDIR/facegate.toml (the
ConfigMap's file) and OUTDIR/env (the container's literal FACEGATE__* variables, NAME=VALUE lines, plus
placeholders for those that come from Secrets, marked with '#secret ' in front), and asserts what the chart
promises. Prints the problems and exits 1 if there are any.
"""

import hashlib
import re
import sys

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

HEALTH_SERVICE = "facegate.v1.VerificationService"
SECRET_ENV = {
    "FACEGATE__JUHE__KEY",
    "FACEGATE__JUHE__OPENID",
    "FACEGATE__BAIDU__API_KEY",
    "FACEGATE__BAIDU__SECRET_KEY",
    "FACEGATE__MEGVII__API_KEY",
    "FACEGATE__MEGVII__API_SECRET",
}
DB_ENV = "FACEGATE__STORE__DATABASE_URL"
# Configuration keys that are secrets: never in the ConfigMap.
SECRET_KEYS = {
    ("juhe", "key"),
    ("juhe", "openid"),
    ("baidu", "api_key"),
    ("baidu", "secret_key"),
    ("megvii", "api_key"),
    ("megvii", "api_secret"),
    ("store", "database_url"),
}
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")

problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)
    return cond


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def check_service_monitor(sm, services):
    """Structural check of a monitoring.coreos.com/v1 ServiceMonitor (kubernetes-validate has no CRD schemas):
    the fields the Prometheus Operator requires, only fields its CRD defines at the levels the chart writes, and
    that it selects the chart's Service and scrapes /metrics on a named port of it."""
    name = sm.get("metadata", {}).get("name", "?")
    where = f"ServiceMonitor {name}"
    check(sm.get("apiVersion") == "monitoring.coreos.com/v1", f"{where}: apiVersion must be monitoring.coreos.com/v1")
    check(set(sm) <= {"apiVersion", "kind", "metadata", "spec"}, f"{where}: unknown top-level fields {set(sm)}")
    meta = sm.get("metadata", {})
    check(bool(meta.get("name")) and bool(meta.get("namespace")), f"{where}: metadata.name and namespace required")
    check(set(meta) <= {"name", "namespace", "labels", "annotations"}, f"{where}: unexpected metadata {set(meta)}")
    for k, v in (meta.get("labels") or {}).items():
        check(isinstance(v, str), f"{where}: label {k} must be a string")
    spec = sm.get("spec")
    if not check(isinstance(spec, dict), f"{where}: spec required"):
        return
    spec_fields = {
        "jobLabel", "targetLabels", "podTargetLabels", "endpoints", "selector", "selectorMechanism",
        "namespaceSelector", "sampleLimit", "scrapeProtocols", "fallbackScrapeProtocol", "targetLimit",
        "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit", "scrapeClassicHistograms",
        "nativeHistogramBucketLimit", "nativeHistogramMinBucketFactor", "convertClassicHistogramsToNHCB",
        "keepDroppedTargets", "attachMetadata", "scrapeClass", "bodySizeLimit", "serviceDiscoveryRole",
    }
    check(set(spec) <= spec_fields, f"{where}: unknown spec fields {set(spec) - spec_fields}")
    selector = spec.get("selector")
    if check(isinstance(selector, dict), f"{where}: spec.selector required (the CRD requires it)"):
        check(set(selector) <= {"matchLabels", "matchExpressions"}, f"{where}: spec.selector has unknown fields")
        ml = selector.get("matchLabels") or {}
        check(bool(ml), f"{where}: spec.selector.matchLabels must not be empty (it would select every Service)")
        matched = [s for s in services if ml.items() <= (s["metadata"].get("labels") or {}).items()]
        check(len(matched) == 1, f"{where}: selector must match exactly the chart's Service, matched {len(matched)}")
    ns = spec.get("namespaceSelector")
    if ns is not None:
        check(set(ns) <= {"any", "matchNames"}, f"{where}: spec.namespaceSelector has unknown fields")
        check(all(isinstance(n, str) for n in ns.get("matchNames", [])), f"{where}: matchNames must be strings")
    endpoints = spec.get("endpoints")
    if not check(isinstance(endpoints, list) and endpoints, f"{where}: spec.endpoints must be a non-empty list"):
        return
    endpoint_fields = {
        "port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "tlsConfig",
        "bearerTokenFile", "bearerTokenSecret", "authorization", "honorLabels", "honorTimestamps",
        "trackTimestampsStaleness", "basicAuth", "oauth2", "metricRelabelings", "relabelings", "proxyUrl",
        "noProxy", "proxyFromEnvironment", "proxyConnectHeader", "followRedirects", "enableHttp2", "filterRunning",
    }
    relabel_fields = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}
    port_names = {p.get("name") for s in services for p in s["spec"].get("ports", [])}
    for i, ep in enumerate(endpoints):
        at = f"{where}: endpoints[{i}]"
        check(set(ep) <= endpoint_fields, f"{at}: unknown fields {set(ep) - endpoint_fields}")
        check(ep.get("port") in port_names, f"{at}: port {ep.get('port')!r} is not a port name of the Service")
        check(ep.get("port") == "http" and ep.get("path") == "/metrics", f"{at}: must scrape /metrics on port http")
        check(ep.get("scheme", "http") in {"http", "https", "HTTP", "HTTPS"}, f"{at}: scheme must be http(s)")
        for key in ("interval", "scrapeTimeout"):
            if key in ep:
                check(isinstance(ep[key], str) and DURATION.match(ep[key]) and ep[key] != "",
                      f"{at}: {key} must be a Prometheus duration")
        if "honorLabels" in ep:
            check(isinstance(ep["honorLabels"], bool), f"{at}: honorLabels must be a boolean")
        for key in ("relabelings", "metricRelabelings"):
            for j, rc in enumerate(ep.get(key) or []):
                check(isinstance(rc, dict) and set(rc) <= relabel_fields, f"{at}: {key}[{j}] has unknown fields")


def main():
    render_path, outdir = sys.argv[1], sys.argv[2]
    with open(render_path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]

    monitors = by_kind(docs, "ServiceMonitor")
    with open(f"{outdir}/k8s.yaml", "w") as f:
        yaml.safe_dump_all([d for d in docs if d.get("kind") != "ServiceMonitor"], f, sort_keys=False)

    check(not by_kind(docs, "Secret"), "the chart must not render Secrets (credentials come from existing ones)")

    deployments = by_kind(docs, "Deployment")
    if not check(len(deployments) == 1, f"expected one Deployment, found {len(deployments)}"):
        return
    dep = deployments[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    containers = pod["containers"]
    c = next((c for c in containers if c["name"] == "facegate"), None)
    if not check(c is not None, "no facegate container"):
        return
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(set(ports) == {"grpc", "http"}, f"container ports must be grpc and http, got {ports}")

    # Probes: native gRPC only, on the gRPC port; readiness asks for the API service.
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(name)
        if probe is None:
            check(name == "startupProbe", f"{name} missing")
            continue
        check(set(probe) & {"httpGet", "exec", "tcpSocket"} == set(), f"{name} must use grpc only")
        check("grpc" in probe and probe["grpc"].get("port") == ports.get("grpc"),
              f"{name} must be a grpc probe on the gRPC port {ports.get('grpc')}")
    ready = c.get("readinessProbe", {}).get("grpc", {})
    check(ready.get("service") == HEALTH_SERVICE, f"readinessProbe.grpc.service must be {HEALTH_SERVICE}")

    # Hardening.
    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, "runAsNonRoot must be true")
    check(psc.get("runAsUser", 0) > 0, "pod runAsUser must be set, non-zero")
    check(psc.get("fsGroup") is not None, "fsGroup must be set")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities must drop ALL")
    for sc, who in ((psc, "pod"), (csc, "container")):
        check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{who} seccompProfile RuntimeDefault")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    check("/tmp" in mounts and "emptyDir" in volumes.get(mounts["/tmp"], {}), "/tmp must be a writable emptyDir")
    check(pod.get("automountServiceAccountToken") is False, "the service account token must not be mounted")

    # Environment: listeners on 0.0.0.0, secrets only from Secret references.
    env = {e["name"]: e for e in c.get("env", [])}
    for name in ("FACEGATE__GRPC__LISTEN", "FACEGATE__HTTP__LISTEN"):
        check(env.get(name, {}).get("value", "").startswith("0.0.0.0:"), f"{name} must listen on 0.0.0.0")
    for name in SECRET_ENV | {DB_ENV}:
        e = env.get(name)
        if e is None:
            continue
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        check("value" not in e and ref is not None, f"{name} must come from a secretKeyRef, never a value")
        if ref is not None:
            if name in SECRET_ENV:
                check(ref.get("optional") is True, f"{name}: secretKeyRef must be optional")
            else:
                check(ref.get("optional") is not True, f"{name}: the database URL Secret must not be optional")
    check(SECRET_ENV <= set(env), f"vendor credential variables missing: {sorted(SECRET_ENV - set(env))}")
    external_db = DB_ENV in env

    # ConfigMap: facegate.toml parses, holds no secrets, and is what the pod mounts and passes with --config.
    cms = by_kind(docs, "ConfigMap")
    check(len(cms) == 1, f"expected one ConfigMap, found {len(cms)}")
    cm = cms[0]
    text = cm["data"]["facegate.toml"]
    try:
        toml = tomllib.loads(text)
    except Exception as e:  # noqa: BLE001
        problems.append(f"facegate.toml is not valid TOML: {e}")
        toml = {}
    for section, key in SECRET_KEYS:
        check(key not in (toml.get(section) or {}), f"secret {section}.{key} must not be in the ConfigMap")
    check("store" not in toml, "the store section (sqlite_path, database_url) is set by the chart, not the ConfigMap")
    check(not re.search(r"postgres(ql)?://", text, re.I), "a database URL appears in the ConfigMap")
    cfg_volume = next((v for v in volumes.values() if v.get("configMap", {}).get("name") == cm["metadata"]["name"]),
                      None)
    check(cfg_volume is not None, "the ConfigMap must be mounted")
    args = c.get("args", [])
    check(args[:1] == ["serve"] and "--config" in args, f"args must be serve --config FILE, got {args}")
    if "--config" in args and cfg_volume is not None:
        path = args[args.index("--config") + 1]
        mount = next((m for m in c["volumeMounts"] if m["name"] == cfg_volume["name"]), {})
        check(path == f"{mount.get('mountPath')}/facegate.toml", f"--config {path} is not the mounted ConfigMap")
    checksum = spec["template"]["metadata"].get("annotations", {}).get("checksum/config", "")
    check(re.fullmatch(r"[0-9a-f]{64}", checksum) is not None, "checksum/config annotation missing")

    # Shutdown timing: preStop sleep = drain delay, grace period longer than preStop + drain + grace.
    grpc = toml.get("grpc", {})
    drain = grpc.get("drain_delay_secs", 0)
    grace = grpc.get("shutdown_grace_secs", 20)
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    check(sleep == drain, f"preStop sleep ({sleep}) must equal drain_delay_secs ({drain})")
    check("exec" not in c.get("lifecycle", {}).get("preStop", {}), "preStop must not exec (the image has no shell)")
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    check(tgps > sleep + drain + grace, f"terminationGracePeriodSeconds {tgps} <= {sleep} + {drain} + {grace}")
    check(bool(c.get("resources", {}).get("requests")) and bool(c.get("resources", {}).get("limits")),
          "resources need requests and limits")

    # Replicas, HPA and the store.
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if hpas:
        check("replicas" not in spec, "the Deployment must have no replicas when the HPA is on")
        check(hpas[0]["apiVersion"] == "autoscaling/v2", "HPA must be autoscaling/v2")
        check(hpas[0]["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "HPA must target the Deployment")
        check(external_db, "an HPA needs the external database")
    else:
        check("replicas" in spec, "the Deployment needs replicas when the HPA is off")
    if not external_db:
        check(spec.get("replicas") == 1 and not hpas, "the SQLite store allows exactly one replica")
        check(spec.get("strategy", {}).get("type") == "Recreate", "the SQLite store needs the Recreate strategy")
        data = volumes.get(mounts.get("/var/lib/facegate", ""), {})
        check("persistentVolumeClaim" in data or "emptyDir" in data, "the SQLite directory needs a volume")
    else:
        check(not by_kind(docs, "PersistentVolumeClaim"), "no PersistentVolumeClaim with the external database")

    # Service: grpc (appProtocol grpc) and http.
    services = by_kind(docs, "Service")
    if check(len(services) == 1, f"expected one Service, found {len(services)}"):
        sports = {p["name"]: p for p in services[0]["spec"]["ports"]}
        check(sports.get("grpc", {}).get("appProtocol") == "grpc", "Service port grpc needs appProtocol grpc")
        check(sports.get("grpc", {}).get("targetPort") == "grpc", "Service port grpc must target grpc")
        check(sports.get("http", {}).get("targetPort") == "http", "Service needs the http port")
        selector = services[0]["spec"]["selector"]

        # helm test: grpc-health-probe against the Service, not selected by it.
        tests = [d for d in docs if d.get("kind") == "Pod"
                 and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
        if check(len(tests) == 1, "expected one helm test Pod"):
            t = tests[0]
            labels = t["metadata"].get("labels", {})
            check(not selector.items() <= labels.items(), "the test Pod must not match the Service selector")
            for tc in t["spec"]["containers"]:
                check("grpc-health-probe" in tc["image"], "the test Pod must run grpc-health-probe")
                check(any(a.startswith(f"-addr={services[0]['metadata']['name']}:") for a in tc.get("args", [])),
                      "the test must dial the Service")
            check(any(f"-service={HEALTH_SERVICE}" in tc.get("args", []) for tc in t["spec"]["containers"]),
                  f"the test must check {HEALTH_SERVICE}")

    for pdb in by_kind(docs, "PodDisruptionBudget"):
        check(("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]), "PDB: one of min/max")

    for np in by_kind(docs, "NetworkPolicy"):
        check(set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "NetworkPolicy must cover ingress and egress")
        ingress_ports = {p["port"] for r in np["spec"].get("ingress", []) for p in r.get("ports", [])}
        check(ingress_ports <= {"grpc", "http"}, f"NetworkPolicy ingress only to grpc/http, got {ingress_ports}")
        egress_ports = {p["port"] for r in np["spec"].get("egress", []) for p in r.get("ports", [])}
        check(53 in egress_ports and 443 in egress_ports, "NetworkPolicy egress needs DNS and HTTPS")

    for sm in monitors:
        check_service_monitor(sm, services)

    # What check-config gets: the literal variables, and placeholders for the Secret ones.
    with open(f"{outdir}/facegate.toml", "w") as f:
        f.write(text)
    with open(f"{outdir}/env", "w") as f:
        for name, e in env.items():
            if not name.startswith("FACEGATE__"):
                continue
            if "value" in e:
                f.write(f"{name}={e['value']}\n")
            elif name == DB_ENV:
                f.write(f"#secret {name}=postgres://facegate:placeholder@db.invalid:5432/facegate\n")
            else:
                f.write(f"#secret {name}=placeholder-{hashlib.sha1(name.encode()).hexdigest()[:8]}\n")

    summary = ", ".join(f"{k}" for k in sorted({d["kind"] for d in docs}))
    print(f"  objects: {summary}")


if __name__ == "__main__":
    main()
    if problems:
        for p in problems:
            print(f"  FAIL: {p}")
        sys.exit(1)
