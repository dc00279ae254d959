#!/usr/bin/env python3
"""Checks one `helm template` render of the facegate chart (called by helm/check.sh).

usage: check_render.py RENDER.yaml OUTDIR [VALUES.yaml]

Writes OUTDIR/k8s.yaml (every object but the ServiceMonitor, for kubernetes-validate), OUTDIR/facegate.toml (the
ConfigMap's file), OUTDIR/env (the container's literal FACEGATE__* variables, NAME=VALUE lines, plus
placeholders for those that come from Secrets, marked with '#secret ' in front), and OUTDIR/facegate.check.toml:
the same file with each path of a mounted Secret file (callers' keys, webhook signing secrets, the data key ring,
TLS certificates) pointing under OUTDIR/mounts, where placeholder files stand in for the Secrets (a random key; a
whsec_ secret of 32 random bytes; a key ring with one random 32-byte key; a self-signed certificate made with
openssl). Asserts what the chart promises. VALUES.yaml is the values file of the render, if any (the
NetworkPolicy is on unless it turns it off). Prints the problems and exits 1 if there are any.
"""

import base64
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

HEALTH_SERVICE = "facegate.v1.VerificationService"
# Kinds from CRDs, which kubernetes-validate has no schemas for: checked structurally here.
CRD_KINDS = {"ServiceMonitor", "HTTPRoute"}
# What an Ingress or HTTPRoute may route to facegate (src/http: callbacks::MEGVII_NOTIFY_PATH, relay::PREFIX), and
# the operations paths that must never be reachable through them.
PUBLIC_PATHS = [("/v1/callbacks/megvii/notify", "Exact"), ("/v1/return", "Prefix")]
OPS_PATHS = ["/metrics", "/healthz", "/readyz"]
SECRET_ENV = {
    "FACEGATE__JUHE__KEY",
    "FACEGATE__JUHE__OPENID",
    "FACEGATE__BAIDU__API_KEY",
    "FACEGATE__BAIDU__SECRET_KEY",
    "FACEGATE__MEGVII__API_KEY",
    "FACEGATE__MEGVII__API_SECRET",
}
# vendorCredentials.keys -> the variable it feeds.
VENDOR_KEY_ENV = {
    "juheKey": "FACEGATE__JUHE__KEY",
    "juheOpenid": "FACEGATE__JUHE__OPENID",
    "baiduApiKey": "FACEGATE__BAIDU__API_KEY",
    "baiduSecretKey": "FACEGATE__BAIDU__SECRET_KEY",
    "megviiApiKey": "FACEGATE__MEGVII__API_KEY",
    "megviiApiSecret": "FACEGATE__MEGVII__API_SECRET",
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
    ("store", "encryption_keys"),
}
# The only store key the ConfigMap may hold: the path of the mounted key-ring Secret.
STORE_KEYS = {"encryption_keys_file"}
# facegate's webhook event types (src/domain/webhooks.rs EVENT_TYPES), the [webhooks] delivery settings and the
# keys the chart renders for an endpoint (never an inline secret or previous_secret).
WEBHOOK_EVENTS = {
    "session.created", "session.awaiting_user", "session.processing", "session.verified", "session.failed",
    "session.expired", "session.canceled", "session.redacted",
}
WEBHOOK_SETTINGS = {"timeout_secs", "retry_for_secs", "initial_backoff_ms", "max_backoff_secs", "concurrency",
                    "poll_interval_ms"}
WEBHOOK_ENDPOINT_KEYS = {"name", "tenant", "url", "events", "secret_file", "previous_secret_file",
                         "previous_secret_expires"}
SCOPES = {"sessions:create", "sessions:read", "sessions:cancel", "personal_data:reveal", "media:read"}
# Where the chart mounts Secrets for facegate; the ConfigMap names files under it.
SECRET_MOUNT_ROOT = "/run/secrets/facegate/"
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
        check(ep.get("port") == "admin" and ep.get("path") == "/metrics", f"{at}: must scrape /metrics on port admin")
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


def routed_only_public(pairs, where):
    """`pairs` (path, Exact|Prefix) must be exactly the public paths: nothing that reaches /metrics, /healthz,
    /readyz or anything else."""
    check(sorted(pairs) == sorted(PUBLIC_PATHS), f"{where}: must route exactly {PUBLIC_PATHS}, got {pairs}")
    for path, kind in pairs:
        for ops in OPS_PATHS:
            reaches = path == ops if kind == "Exact" else (ops == path or ops.startswith(path.rstrip("/") + "/"))
            check(not reaches, f"{where}: {kind} {path} would route {ops}")


def check_ingress(ing, svc_name):
    where = f"Ingress {ing['metadata'].get('name')}"
    spec = ing.get("spec") or {}
    check("defaultBackend" not in spec, f"{where}: no defaultBackend (it would route every path)")
    rules = spec.get("rules") or []
    check(bool(rules), f"{where}: needs rules")
    for i, rule in enumerate(rules):
        paths = (rule.get("http") or {}).get("paths") or []
        pairs = []
        for p in paths:
            pairs.append((p.get("path"), p.get("pathType")))
            svc = (p.get("backend") or {}).get("service") or {}
            check(svc.get("name") == svc_name and (svc.get("port") or {}).get("name") == "http",
                  f"{where}: rules[{i}] {p.get('path')} must go to port http of Service {svc_name}")
        routed_only_public(pairs, f"{where}: rules[{i}]")
    for t in spec.get("tls") or []:
        check(bool(t.get("secretName")), f"{where}: tls entries need a secretName")


HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_http_route(route, svc_name, http_port):
    """Structural check of a gateway.networking.k8s.io/v1 HTTPRoute against the Gateway API v1 CRD (standard
    channel): known fields only at every level the chart writes, the required ones, the CRD's limits and path rules;
    and that it routes only the public paths to the Service's http port."""
    where = f"HTTPRoute {route.get('metadata', {}).get('name', '?')}"
    check(route.get("apiVersion") == "gateway.networking.k8s.io/v1", f"{where}: apiVersion must be gateway.networking.k8s.io/v1")
    check(set(route) <= {"apiVersion", "kind", "metadata", "spec"}, f"{where}: unknown top-level fields {set(route)}")
    meta = route.get("metadata", {})
    check(bool(meta.get("name")) and bool(meta.get("namespace")), f"{where}: metadata.name and namespace required")
    check(set(meta) <= {"name", "namespace", "labels", "annotations"}, f"{where}: unexpected metadata {set(meta)}")
    for k, v in list((meta.get("labels") or {}).items()) + list((meta.get("annotations") or {}).items()):
        check(isinstance(v, str), f"{where}: label/annotation {k} must be a string")
    spec = route.get("spec")
    if not check(isinstance(spec, dict), f"{where}: spec required"):
        return
    check(set(spec) <= {"parentRefs", "hostnames", "rules"}, f"{where}: unknown spec fields {set(spec)}")
    parents = spec.get("parentRefs") or []
    check(1 <= len(parents) <= 32, f"{where}: 1 to 32 parentRefs")
    for i, ref in enumerate(parents):
        at = f"{where}: parentRefs[{i}]"
        check(set(ref) <= {"group", "kind", "namespace", "name", "sectionName", "port"}, f"{at}: unknown fields")
        check(isinstance(ref.get("name"), str) and 1 <= len(ref["name"]) <= 253, f"{at}: name required")
        if "port" in ref:
            check(isinstance(ref["port"], int) and 1 <= ref["port"] <= 65535, f"{at}: port 1-65535")
    hostnames = spec.get("hostnames") or []
    check(len(hostnames) <= 16, f"{where}: at most 16 hostnames")
    for h in hostnames:
        check(isinstance(h, str) and len(h) <= 253 and HOSTNAME.match(h) is not None, f"{where}: bad hostname {h!r}")
    rules = spec.get("rules") or []
    check(1 <= len(rules) <= 16, f"{where}: 1 to 16 rules")
    pairs = []
    for i, rule in enumerate(rules):
        at = f"{where}: rules[{i}]"
        check(set(rule) <= {"name", "matches", "filters", "backendRefs", "timeouts"}, f"{at}: unknown fields {set(rule)}")
        matches = rule.get("matches") or []
        check(1 <= len(matches) <= 64, f"{at}: 1 to 64 matches (none would match every path)")
        for j, m in enumerate(matches):
            check(set(m) <= {"path", "headers", "queryParams", "method"}, f"{at}: matches[{j}] unknown fields")
            path = m.get("path") or {}
            check(set(path) <= {"type", "value"}, f"{at}: matches[{j}].path unknown fields")
            kind, value = path.get("type"), path.get("value")
            check(kind in ("Exact", "PathPrefix"), f"{at}: matches[{j}] path type must be Exact or PathPrefix")
            ok = (isinstance(value, str) and value.startswith("/") and len(value) <= 1024 and "//" not in value
                  and "/./" not in value and "/../" not in value and "%2f" not in value.lower() and "#" not in value
                  and not value.endswith(("/.", "/..")))
            check(ok, f"{at}: matches[{j}] path value {value!r} breaks the CRD's rules")
            pairs.append((value, "Exact" if kind == "Exact" else "Prefix"))
        backends = rule.get("backendRefs") or []
        check(len(backends) == 1, f"{at}: one backendRef")
        for b in backends:
            check(set(b) <= {"group", "kind", "name", "namespace", "port", "weight", "filters"}, f"{at}: backendRefs unknown fields")
            check(b.get("kind", "Service") == "Service" and b.get("group", "") == "", f"{at}: backend must be a Service")
            check(b.get("name") == svc_name and b.get("port") == http_port,
                  f"{at}: backend must be Service {svc_name} port {http_port} (http), got {b}")
    routed_only_public(pairs, where)


def secret_file(c, volumes, path, at):
    """(Secret name, key) of the Secret file the container sees at `path`, checking that it is mounted read-only
    from a secret or projected-secret volume without subPath (so the kubelet's updates reach it); None if not."""
    if not check(isinstance(path, str) and path.startswith(SECRET_MOUNT_ROOT), f"{at}: {path!r} not under {SECRET_MOUNT_ROOT}"):
        return None
    directory, name = os.path.dirname(path), os.path.basename(path)
    mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == directory), None)
    if not check(mount is not None, f"{at}: no volume mounted at {directory}"):
        return None
    check(mount.get("readOnly") is True, f"{at}: {directory} must be mounted read-only")
    check("subPath" not in mount, f"{at}: a subPath mount would not follow Secret updates")
    volume = volumes.get(mount["name"], {})
    sources = []
    if "secret" in volume:
        sources = [{"name": volume["secret"].get("secretName"), "items": volume["secret"].get("items", [])}]
    elif "projected" in volume:
        for src in volume["projected"].get("sources", []):
            check("secret" in src, f"{at}: projected volume {mount['name']} may only hold Secrets")
            if "secret" in src:
                sources.append(src["secret"])
    else:
        problems.append(f"{at}: {directory} is not a Secret volume")
        return None
    for src in sources:
        for item in src.get("items") or []:
            if item.get("path") == name:
                return (src.get("name"), item.get("key"))
    problems.append(f"{at}: no Secret item provides {name} in volume {mount['name']}")
    return None


def placeholders(outdir, text, mounted):
    """OUTDIR/facegate.check.toml and the files it names: what check-config can read in place of the Secrets."""
    root = os.path.join(outdir, "mounts")
    shutil.rmtree(root, ignore_errors=True)
    openssl = shutil.which("openssl")
    made = {}
    for path, kind in sorted(mounted.items()):
        local = root + path
        os.makedirs(os.path.dirname(local), exist_ok=True)
        if kind == "key":
            with open(local, "w") as f:
                f.write(secrets.token_urlsafe(32))
        elif kind == "whsec":
            # A valid Standard Webhooks signing secret: whsec_ and the base64 of 32 random bytes.
            with open(local, "w") as f:
                f.write(f"whsec_{base64.b64encode(secrets.token_bytes(32)).decode()}\n")
        elif kind == "keyring":
            # A valid key-ring file: one `id:base64key` line, 32 random bytes.
            with open(local, "w") as f:
                f.write("# placeholder data key ring (helm/check_render.py)\n")
                f.write(f"k1:{base64.b64encode(secrets.token_bytes(32)).decode()}\n")
        elif openssl:
            directory = os.path.dirname(local)
            if directory not in made:
                subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                                "-nodes", "-days", "1", "-subj", "/CN=facegate.check", "-keyout",
                                f"{directory}/.key.pem", "-out", f"{directory}/.cert.pem"],
                               check=True, capture_output=True)
                made[directory] = True
            src = {"cert": ".cert.pem", "ca": ".cert.pem", "privkey": ".key.pem"}[kind]
            shutil.copyfile(f"{directory}/{src}", local)
        else:
            open(local, "w").close()
        if kind in ("key", "whsec", "keyring", "privkey"):
            os.chmod(local, 0o600)
        text = text.replace(f'"{path}"', f'"{local}"')
    with open(os.path.join(outdir, "facegate.check.toml"), "w") as f:
        f.write(text)


values = {}


def main():
    global values
    render_path, outdir = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        with open(sys.argv[3]) as f:
            values = yaml.safe_load(f) or {}
    with open(render_path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]

    monitors = by_kind(docs, "ServiceMonitor")
    routes = by_kind(docs, "HTTPRoute")
    # kubernetes-validate knows the built-in kinds only: the CRD kinds are checked structurally below.
    with open(f"{outdir}/k8s.yaml", "w") as f:
        yaml.safe_dump_all([d for d in docs if d.get("kind") not in CRD_KINDS], f, sort_keys=False)

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
    check(set(ports) == {"grpc", "http", "admin"}, f"container ports must be grpc, http and admin, got {ports}")

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
    for name, port in (("FACEGATE__GRPC__LISTEN", "grpc"), ("FACEGATE__HTTP__LISTEN", "http"),
                       ("FACEGATE__HTTP__ADMIN_LISTEN", "admin")):
        check(env.get(name, {}).get("value", "") == f"0.0.0.0:{ports.get(port)}",
              f"{name} must listen on 0.0.0.0:<the {port} container port>")
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
    # Every vendor variable is there unless the values leave its Secret key out ("").
    unnamed = {VENDOR_KEY_ENV[k] for k, v in ((values.get("vendorCredentials") or {}).get("keys") or {}).items()
               if v == "" and k in VENDOR_KEY_ENV}
    check(SECRET_ENV - unnamed <= set(env),
          f"vendor credential variables missing: {sorted(SECRET_ENV - unnamed - set(env))}")
    check(not (unnamed & set(env)), f"variables of unnamed Secret keys rendered: {sorted(unnamed & set(env))}")
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
    store = toml.get("store") or {}
    check(set(store) <= STORE_KEYS,
          f"the ConfigMap's [store] may only hold {sorted(STORE_KEYS)} (sqlite_path and database_url are set by the "
          f"chart as variables, keys come from a Secret), got {sorted(store)}")
    check("sandbox" not in toml, "the ConfigMap must not have a sandbox section (the production image has none)")
    auth = toml.get("auth") or {}
    grpc_tls = (toml.get("grpc") or {}).get("tls") or {}
    http_tls = (toml.get("http") or {}).get("tls") or {}

    # Probes: plaintext GETs on the admin port, whatever TLS and authentication the gRPC and HTTP ports have:
    # startup and liveness /healthz (the process), readiness /readyz (store reachable, a vendor configured).
    for name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        probe = c.get(name)
        if probe is None:
            check(name == "startupProbe", f"{name} missing")
            continue
        get = probe.get("httpGet") or {}
        check(set(probe) & {"grpc", "exec", "tcpSocket"} == set(), f"{name} must use httpGet only")
        check(get.get("path") == path and get.get("port") == "admin" and get.get("scheme") == "HTTP",
              f"{name} must GET {path} on port admin over HTTP, got {get}")

    # Callers: present unless auth.mode = "none", each with known scopes and a credential; a key from a Secret is
    # a file of a Secret mounted read-only, never the key in the ConfigMap.
    mode = auth.get("mode", "keys")
    callers = auth.get("callers") or []
    check(mode in ("keys", "none"), f"auth.mode must be keys or none, got {mode!r}")
    check(mode == "none" or callers, "auth.mode keys needs callers (facegate refuses to start without)")
    check(not re.search(r"(?m)^\s*api_key\s*=", text), "a caller's key itself must never be in the ConfigMap")
    mounted = {}  # path in the container -> kind of placeholder for check-config
    for i, caller in enumerate(callers):
        at = f"auth.callers[{i}] ({caller.get('id')})"
        check(set(caller) <= {"id", "tenant", "scopes", "api_key_sha256", "api_key_file", "mtls_subject"},
              f"{at}: unknown keys {set(caller)}")
        check(bool(caller.get("id")) and bool(caller.get("tenant")), f"{at}: id and tenant required")
        check(bool(caller.get("scopes")) and set(caller.get("scopes", [])) <= SCOPES, f"{at}: scopes must be known")
        check(any(caller.get(k) for k in ("api_key_sha256", "api_key_file", "mtls_subject")), f"{at}: no credential")
        if "api_key_sha256" in caller:
            check(re.fullmatch(r"[0-9a-f]{64}", caller["api_key_sha256"]) is not None, f"{at}: api_key_sha256 not hex")
        if caller.get("api_key_file"):
            ref = secret_file(c, volumes, caller["api_key_file"], at)
            if ref is not None:
                mounted[caller["api_key_file"]] = "key"
        if caller.get("mtls_subject"):
            check(bool(grpc_tls.get("client_ca_file")), f"{at}: mtls_subject without grpc.tls.client_ca_file")

    # Webhooks: each endpoint's signing secret (and a rotation's previous one) is a file of a Secret mounted read-only
    # (0440, no subPath), never the secret itself in the ConfigMap; https:// URLs only (facegate refuses plaintext
    # endpoints in production); the endpoints are those of the values, with the Secrets they name.
    webhooks = toml.get("webhooks") or {}
    check(set(webhooks) <= WEBHOOK_SETTINGS | {"endpoints"},
          f"[webhooks]: unknown keys {sorted(set(webhooks) - WEBHOOK_SETTINGS - {'endpoints'})}")
    check(not re.search(r"(?m)^\s*(previous_)?secret\s*=", text),
          "a webhook signing secret itself (secret, previous_secret) must never be in the ConfigMap")
    check(not re.search(r"whsec_", text), "a whsec_ signing secret appears in the ConfigMap")
    endpoints = webhooks.get("endpoints") or []
    want_endpoints = ((values.get("webhooks") or {}).get("endpoints")) or []
    check(len(endpoints) == len(want_endpoints),
          f"[[webhooks.endpoints]]: {len(endpoints)} rendered, the values have {len(want_endpoints)}")
    names = [e.get("name") for e in endpoints]
    check(len(set(names)) == len(names), f"[[webhooks.endpoints]]: names must differ, got {names}")
    tenants = {auth.get("default_tenant", "default")} | {c.get("tenant") for c in callers}
    webhook_files = []
    for i, ep in enumerate(endpoints):
        at = f"webhooks.endpoints[{i}] ({ep.get('name')})"
        check(set(ep) <= WEBHOOK_ENDPOINT_KEYS, f"{at}: unexpected keys {sorted(set(ep) - WEBHOOK_ENDPOINT_KEYS)}")
        check(bool(ep.get("name")), f"{at}: the chart must name every endpoint")
        check(isinstance(ep.get("url"), str) and ep["url"].startswith("https://"), f"{at}: url must be https://")
        check(ep.get("tenant", auth.get("default_tenant", "default")) in tenants,
              f"{at}: tenant {ep.get('tenant')} is no caller's tenant (nor auth.default_tenant)")
        check(set(ep.get("events") or []) <= WEBHOOK_EVENTS, f"{at}: unknown events {ep.get('events')}")
        check("previous_secret_expires" not in ep or "previous_secret_file" in ep,
              f"{at}: previous_secret_expires without previous_secret_file")
        want = want_endpoints[i] if i < len(want_endpoints) else {}
        if check(bool(ep.get("secret_file")), f"{at}: secret_file missing (facegate needs a signing secret)"):
            ref = secret_file(c, volumes, ep["secret_file"], f"{at}.secret_file")
            if ref is not None:
                mounted[ep["secret_file"]] = "whsec"
                webhook_files.append(ep["secret_file"])
                if want.get("secret"):
                    expect = (want["secret"].get("name"), want["secret"].get("key"))
                    check(ref == expect, f"{at}.secret_file: expected Secret {expect}, mounted {ref}")
        if ep.get("previous_secret_file"):
            ref = secret_file(c, volumes, ep["previous_secret_file"], f"{at}.previous_secret_file")
            if ref is not None:
                mounted[ep["previous_secret_file"]] = "whsec"
                webhook_files.append(ep["previous_secret_file"])
                if want.get("previousSecret"):
                    expect = (want["previousSecret"].get("name"), want["previousSecret"].get("key"))
                    check(ref == expect, f"{at}.previous_secret_file: expected Secret {expect}, mounted {ref}")
        else:
            check(not want.get("previousSecret"), f"{at}: previousSecret in the values, no previous_secret_file")
    check(len(set(webhook_files)) == len(webhook_files), f"webhook secret files must differ, got {webhook_files}")
    for path in webhook_files:
        mount = next(m for m in c["volumeMounts"] if m["mountPath"].rstrip("/") == os.path.dirname(path))
        vol = volumes.get(mount["name"], {})
        wmode = (vol.get("projected") or vol.get("secret") or {}).get("defaultMode")
        check(wmode == 0o440, f"{path}: the webhook secrets' volume must have mode 0440, got {wmode}")
    check(endpoints or "webhook-secrets" not in volumes, "a webhook-secrets volume without webhook endpoints")

    # Encryption at rest: facegate refuses to start without a data key, so the key ring is always a file of a
    # Secret mounted read-only (0440, no subPath, so a rotated ring reaches the pod), named as encryption_keys_file.
    keys_file = store.get("encryption_keys_file")
    if check(bool(keys_file), "store.encryption_keys_file missing: facegate refuses to start without a data key"):
        ref = secret_file(c, volumes, keys_file, "store.encryption_keys_file")
        if ref is not None:
            check(bool(ref[0]), "store.encryption_keys_file: the key ring's Secret needs a name")
            mounted[keys_file] = "keyring"
            mount = next(m for m in c["volumeMounts"] if m["mountPath"].rstrip("/") == os.path.dirname(keys_file))
            vol = volumes.get(mount["name"], {})
            mode = (vol.get("projected") or vol.get("secret") or {}).get("defaultMode")
            check(mode == 0o440, f"store.encryption_keys_file: the key ring's volume must have mode 0440, got {mode}")
            if values.get("encryption"):
                want = (values["encryption"].get("existingSecret"), values["encryption"].get("key", "keys"))
                check(ref == want, f"store.encryption_keys_file: expected Secret {want}, mounted {ref}")

    # TLS: certificate and key are tls.crt and tls.key of one Secret, mounted read-only; the client CA too.
    for listener, tls in (("grpc", grpc_tls), ("http", http_tls)):
        if not tls:
            continue
        at = f"{listener}.tls"
        check(set(tls) <= {"cert_file", "key_file", "client_ca_file", "require_client_cert", "reload_interval_ms"},
              f"{at}: unknown keys {set(tls)}")
        cert = secret_file(c, volumes, tls.get("cert_file", ""), f"{at}.cert_file")
        key = secret_file(c, volumes, tls.get("key_file", ""), f"{at}.key_file")
        if cert is not None and key is not None:
            check(cert[1] == "tls.crt" and key[1] == "tls.key" and cert[0] == key[0],
                  f"{at}: cert_file and key_file must be tls.crt and tls.key of one kubernetes.io/tls Secret")
            mounted[tls["cert_file"]] = "cert"
            mounted[tls["key_file"]] = "privkey"
        if tls.get("client_ca_file"):
            if secret_file(c, volumes, tls["client_ca_file"], f"{at}.client_ca_file") is not None:
                mounted[tls["client_ca_file"]] = "ca"
        elif tls.get("require_client_cert"):
            problems.append(f"{at}: require_client_cert without client_ca_file")
    check(not http_tls.get("require_client_cert"), "http.tls.require_client_cert would lock out vendors and probes")
    for m in c.get("volumeMounts", []):
        if m["mountPath"].startswith(SECRET_MOUNT_ROOT.rstrip("/")):
            check(m.get("readOnly") is True, f"mount {m['mountPath']} must be read-only")
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
        check(sports.get("admin", {}).get("targetPort") == "admin", "Service needs the admin port")
        check(len({p["port"] for p in sports.values()}) == len(sports), "Service ports must differ")
        selector = services[0]["spec"]["selector"]

        # helm test: grpc-health-probe against the Service, not selected by it; over TLS when gRPC speaks TLS.
        # None when it cannot work: health behind credentials, or mTLS required and no client certificate.
        tests = [d for d in docs if d.get("kind") == "Pod"
                 and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
        skippable = auth.get("health_open", True) is False or bool(grpc_tls.get("require_client_cert"))
        if tests or not skippable:
            check(len(tests) == 1, f"expected one helm test Pod, found {len(tests)}")
        for t in tests:
            labels = t["metadata"].get("labels", {})
            check(not selector.items() <= labels.items(), "the test Pod must not match the Service selector")
            tvolumes = {v["name"]: v for v in t["spec"].get("volumes", [])}
            for tc in t["spec"]["containers"]:
                targs = tc.get("args", [])
                check("grpc-health-probe" in tc["image"], "the test Pod must run grpc-health-probe")
                check(any(a.startswith(f"-addr={services[0]['metadata']['name']}:") for a in targs),
                      "the test must dial the Service")
                check(("-tls" in targs) == bool(grpc_tls), "the test must use -tls exactly when gRPC speaks TLS")
                if grpc_tls.get("require_client_cert"):
                    check(any(a.startswith("-tls-client-cert=") for a in targs), "mTLS required: test needs a cert")
                tmounts = {m["mountPath"]: m for m in tc.get("volumeMounts", [])}
                for a in targs:
                    if a.startswith(("-tls-ca-cert=", "-tls-client-cert=", "-tls-client-key=")):
                        path = a.split("=", 1)[1]
                        m = tmounts.get(os.path.dirname(path))
                        ok = m is not None and m.get("readOnly") is True and "secret" in tvolumes.get(m["name"], {})
                        check(ok, f"test: {path} must be a file of a Secret mounted read-only")
            check(any(f"-service={HEALTH_SERVICE}" in tc.get("args", []) for tc in t["spec"]["containers"]),
                  f"the test must check {HEALTH_SERVICE}")

    for pdb in by_kind(docs, "PodDisruptionBudget"):
        check(("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]), "PDB: one of min/max")

    # NetworkPolicy: on by default (unless the values turn it off); ingress only to grpc/http, HTTP reachable,
    # egress to DNS and HTTPS, and to the database when PostgreSQL is the store.
    nps = by_kind(docs, "NetworkPolicy")
    want_np = ((values.get("networkPolicy") or {}).get("enabled", True)) is not False
    check(len(nps) == (1 if want_np else 0), f"expected {1 if want_np else 0} NetworkPolicy, found {len(nps)}")
    for np in nps:
        check(set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "NetworkPolicy must cover ingress and egress")
        ingress_ports = {p["port"] for r in np["spec"].get("ingress", []) for p in r.get("ports", [])}
        check(ingress_ports <= {"grpc", "http", "admin"},
              f"NetworkPolicy ingress only to grpc/http/admin, got {ingress_ports}")
        check(all(r.get("ports") for r in np["spec"].get("ingress", [])), "every ingress rule must name its ports")
        egress_ports = {p["port"] for r in np["spec"].get("egress", []) for p in r.get("ports", [])}
        check(53 in egress_ports and 443 in egress_ports, "NetworkPolicy egress needs DNS and HTTPS")
        if external_db:
            check(5432 in egress_ports or any(isinstance(p, int) and p != 53 and p != 443 for p in egress_ports),
                  "NetworkPolicy egress needs the database with database.external")

    for sm in monitors:
        check_service_monitor(sm, services)

    # Exposure: an Ingress and an HTTPRoute exactly when enabled, routing only the public paths to port http.
    svc_name = services[0]["metadata"]["name"] if services else "?"
    svc_ports = {p["name"]: p["port"] for s in services for p in s["spec"].get("ports", [])}
    ingresses = by_kind(docs, "Ingress")
    want_ingress = bool((values.get("ingress") or {}).get("enabled"))
    check(len(ingresses) == (1 if want_ingress else 0), f"expected {int(want_ingress)} Ingress, found {len(ingresses)}")
    for ing in ingresses:
        check_ingress(ing, svc_name)
    want_route = bool((values.get("httpRoute") or {}).get("enabled"))
    check(len(routes) == (1 if want_route else 0), f"expected {int(want_route)} HTTPRoute, found {len(routes)}")
    for route in routes:
        check_http_route(route, svc_name, svc_ports.get("http"))

    # What check-config gets: the literal variables, and placeholders for the Secret ones.
    with open(f"{outdir}/facegate.toml", "w") as f:
        f.write(text)
    placeholders(outdir, text, mounted)
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
