{{/* Names */}}
{{- define "facegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "facegate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "facegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: every object; selector labels only on the server pods and what selects them. */}}
{{- define "facegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "facegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "facegate.commonLabels" -}}
helm.sh/chart: {{ include "facegate.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: facegate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "facegate.labels" -}}
{{ include "facegate.selectorLabels" . }}
{{ include "facegate.commonLabels" . }}
{{- end }}

{{- define "facegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "facegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "facegate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "facegate.vendorSecretName" -}}
{{- default (printf "%s-vendors" (include "facegate.fullname" .)) .Values.vendorCredentials.existingSecret }}
{{- end }}

{{/* "true" when PostgreSQL (database.external) is the store, "" for the embedded SQLite. */}}
{{- define "facegate.externalDatabase" -}}
{{- if .Values.database.external.existingSecret }}true{{ end }}
{{- end }}

{{/* The SQLite volume is a PersistentVolumeClaim. */}}
{{- define "facegate.sqliteOnClaim" -}}
{{- if and (not (include "facegate.externalDatabase" .)) .Values.persistence.enabled }}true{{ end }}
{{- end }}

{{- define "facegate.claimName" -}}
{{- default (printf "%s-data" (include "facegate.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Shutdown timing, from config.grpc (facegate's defaults: drain 0 s, grace 20 s). */}}
{{- define "facegate.drainSecs" -}}
{{- $g := dig "grpc" dict (default dict .Values.config) }}
{{- if hasKey $g "drain_delay_secs" }}{{ int64 (index $g "drain_delay_secs") }}{{ else }}0{{ end }}
{{- end }}

{{- define "facegate.graceSecs" -}}
{{- $g := dig "grpc" dict (default dict .Values.config) }}
{{- if hasKey $g "shutdown_grace_secs" }}{{ int64 (index $g "shutdown_grace_secs") }}{{ else }}20{{ end }}
{{- end }}

{{/* preStop sleep + drain + grace: what the pod needs after deletion. */}}
{{- define "facegate.shutdownSecs" -}}
{{- $drain := include "facegate.drainSecs" . | int64 }}
{{- $grace := include "facegate.graceSecs" . | int64 }}
{{- add $drain $drain $grace }}
{{- end }}

{{- define "facegate.terminationGracePeriodSeconds" -}}
{{- $need := include "facegate.shutdownSecs" . | int64 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $need 10 }}
{{- else }}
{{- $set := .Values.terminationGracePeriodSeconds | int64 }}
{{- if le $set $need }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed the preStop sleep + config.grpc.drain_delay_secs + config.grpc.shutdown_grace_secs (%d s)" $set $need) }}
{{- end }}
{{- $set }}
{{- end }}
{{- end }}

{{/* Environment variables the chart sets itself; extraEnv may not name them. */}}
{{- define "facegate.managedEnv" -}}
FACEGATE_CONFIG FACEGATE__GRPC__LISTEN FACEGATE__HTTP__LISTEN FACEGATE__HTTP__ADMIN_LISTEN FACEGATE__STORE__SQLITE_PATH FACEGATE__STORE__DATABASE_URL FACEGATE__STORE__ENCRYPTION_KEYS FACEGATE__STORE__ENCRYPTION_KEYS_FILE FACEGATE__JUHE__KEY FACEGATE__JUHE__OPENID FACEGATE__BAIDU__API_KEY FACEGATE__BAIDU__SECRET_KEY FACEGATE__MEGVII__API_KEY FACEGATE__MEGVII__API_SECRET
{{- end }}

{{/* Where the chart mounts Secrets (read-only) for facegate. */}}
{{- define "facegate.callerKeyDir" -}}/run/secrets/facegate/callers{{- end }}
{{- define "facegate.tlsDir" -}}/run/secrets/facegate/tls/{{ . }}{{- end }}
{{- define "facegate.encryptionDir" -}}/run/secrets/facegate/encryption{{- end }}
{{- define "facegate.webhookDir" -}}/run/secrets/facegate/webhooks{{- end }}

{{/* webhooks.endpoints (values), [] when none. */}}
{{- define "facegate.webhookEndpoints" -}}
{{- toJson (default list (default dict .Values.webhooks).endpoints) }}
{{- end }}

{{/* "true" when the gRPC listener speaks TLS. */}}
{{- define "facegate.grpcTls" -}}
{{- if .Values.tls.grpc.secretName }}true{{ end }}
{{- end }}

{{/* Why `helm test` is not rendered, or "" when it is. */}}
{{- define "facegate.testSkipped" -}}
{{- if not .Values.auth.healthOpen }}auth.healthOpen is false: grpc.health.v1 needs credentials the test pod does not have
{{- else if and (include "facegate.grpcTls" .) .Values.tls.grpc.requireClientCert (not .Values.tests.tls.clientCertSecret) }}tls.grpc.requireClientCert is true and tests.tls.clientCertSecret names no client certificate for the test pod
{{- end }}
{{- end }}

{{/* Callers whose key comes from a Secret (mounted as files). */}}
{{- define "facegate.callerKeySecrets" -}}
{{- $out := list }}
{{- range .Values.auth.callers }}
{{- if .apiKeySecret }}{{ $out = append $out . }}{{ end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* auth and tls: what a JSON schema cannot say clearly. */}}
{{- define "facegate.validateAuth" -}}
{{- $a := .Values.auth }}
{{- if and (ne $a.mode "none") (not $a.callers) }}
{{- fail "auth.callers is empty: facegate refuses to start without callers. Declare them (auth.callers) or set auth.mode: none on purpose (no authentication at all)" }}
{{- end }}
{{- $ids := list }}
{{- range $a.callers }}
{{- if has .id $ids }}
{{- fail (printf "auth.callers: the id %s appears twice" .id) }}
{{- end }}
{{- $ids = append $ids .id }}
{{- if not (or .apiKeySha256 .apiKeySecret .mtlsSubject) }}
{{- fail (printf "auth.callers %s: needs a credential: apiKeySha256, apiKeySecret or mtlsSubject" .id) }}
{{- end }}
{{- if and .mtlsSubject (not (and (include "facegate.grpcTls" $) $.Values.tls.grpc.clientCa.enabled)) }}
{{- fail (printf "auth.callers %s: mtlsSubject needs tls.grpc.secretName and tls.grpc.clientCa.enabled (client certificates are verified by the gRPC listener)" .id) }}
{{- end }}
{{- end }}
{{- range $listener := list "grpc" "http" }}
{{- $t := index $.Values.tls $listener }}
{{- if and (not $t.secretName) (or $t.clientCa.enabled $t.requireClientCert) }}
{{- fail (printf "tls.%s: clientCa and requireClientCert need tls.%s.secretName (the listener's certificate)" $listener $listener) }}
{{- end }}
{{- if and $t.requireClientCert (not $t.clientCa.enabled) }}
{{- fail (printf "tls.%s.requireClientCert needs tls.%s.clientCa.enabled (the CA client certificates are verified against)" $listener $listener) }}
{{- end }}
{{- end }}
{{- if .Values.tls.http.requireClientCert }}
{{- fail "tls.http.requireClientCert must be false: vendors' callbacks, browsers' return links and the kubelet's probes reach the HTTP port without client certificates" }}
{{- end }}
{{- end }}

{{/* One quota from values (camelCase) to facegate.toml keys, as JSON. */}}
{{- define "facegate.quota" -}}
{{- $q := dict }}
{{- range $from, $to := dict "rpcPerSecond" "rpc_per_second" "rpcBurst" "rpc_burst" "maxOpenStreams" "max_open_streams" "billedCallsPerDay" "billed_calls_per_day" }}
{{- if and (hasKey $ $from) (not (kindIs "invalid" (index $ $from))) }}
{{- $_ := set $q $to (index $ $from) }}
{{- end }}
{{- end }}
{{- toJson $q }}
{{- end }}

{{/*
The whole facegate.toml as JSON: .Values.config plus [auth] from .Values.auth, [[webhooks.endpoints]] from
.Values.webhooks and grpc.tls / http.tls from .Values.tls, with the paths where the Deployment mounts the Secrets.
*/}}
{{- define "facegate.configValues" -}}
{{- $cfg := deepCopy (default dict .Values.config) }}
{{- $a := .Values.auth }}
{{- $auth := dict "mode" $a.mode "default_tenant" $a.defaultTenant "health_open" $a.healthOpen "reflection_open" $a.reflectionOpen }}
{{- $dq := include "facegate.quota" (default dict $a.defaultQuota) | fromJson }}
{{- if $dq }}{{ $_ := set $auth "default_quota" $dq }}{{ end }}
{{- $quotas := dict }}
{{- range $tenant, $q := (default dict $a.quotas) }}
{{- $_ := set $quotas $tenant (include "facegate.quota" (default dict $q) | fromJson) }}
{{- end }}
{{- if $quotas }}{{ $_ := set $auth "quotas" $quotas }}{{ end }}
{{- $callers := list }}
{{- range $a.callers }}
{{- $c := dict "id" .id "tenant" .tenant "scopes" .scopes }}
{{- with .apiKeySha256 }}{{ $_ := set $c "api_key_sha256" . }}{{ end }}
{{- if .apiKeySecret }}{{ $_ := set $c "api_key_file" (printf "%s/%s" (include "facegate.callerKeyDir" $) .id) }}{{ end }}
{{- with .mtlsSubject }}{{ $_ := set $c "mtls_subject" . }}{{ end }}
{{- $callers = append $callers $c }}
{{- end }}
{{- if $callers }}{{ $_ := set $auth "callers" $callers }}{{ end }}
{{- $_ := set $cfg "auth" $auth }}
{{- /* [[webhooks.endpoints]] from .Values.webhooks (secrets: files of mounted Secrets), beside config.webhooks. */}}
{{- $endpoints := include "facegate.webhookEndpoints" . | fromJsonArray }}
{{- if $endpoints }}
{{- $tenants := list $a.defaultTenant }}
{{- range $a.callers }}{{ $tenants = append $tenants .tenant }}{{ end }}
{{- $dir := include "facegate.webhookDir" . }}
{{- $names := list }}
{{- $files := list }}
{{- $out := list }}
{{- range $endpoints }}
{{- if has .name $names }}
{{- fail (printf "webhooks.endpoints: the name %s appears twice (it names the endpoint in facegate and its mounted secret file)" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- if hasPrefix "." .name }}
{{- fail (printf "webhooks.endpoints %s: the name must not start with '.' (it is the file name of its mounted secret)" .name) }}
{{- end }}
{{- if not (hasPrefix "https://" .url) }}
{{- fail (printf "webhooks.endpoints %s: url %s must be https:// (events carry sessions and their signatures; facegate refuses plaintext endpoints in production, and the image has no sandbox)" .name .url) }}
{{- end }}
{{- $tenant := default $a.defaultTenant .tenant }}
{{- if not (has $tenant $tenants) }}
{{- fail (printf "webhooks.endpoints %s: tenant %s is not the tenant of any auth.callers entry (nor auth.defaultTenant %s): facegate refuses it" .name $tenant $a.defaultTenant) }}
{{- end }}
{{- if and .previousSecretExpires (not .previousSecret) }}
{{- fail (printf "webhooks.endpoints %s: previousSecretExpires needs previousSecret (the Secret and key of the secret being replaced)" .name) }}
{{- end }}
{{- $e := dict "name" .name "url" .url "secret_file" (printf "%s/%s" $dir .name) }}
{{- with .tenant }}{{ $_ := set $e "tenant" . }}{{ end }}
{{- with .events }}{{ $_ := set $e "events" . }}{{ end }}
{{- $files = append $files .name }}
{{- if .previousSecret }}
{{- $prev := printf "%s.previous" .name }}
{{- $_ := set $e "previous_secret_file" (printf "%s/%s" $dir $prev) }}
{{- with .previousSecretExpires }}{{ $_ := set $e "previous_secret_expires" . }}{{ end }}
{{- $files = append $files $prev }}
{{- end }}
{{- $out = append $out $e }}
{{- end }}
{{- range $i, $f := $files }}
{{- if has $f (slice $files 0 $i) }}
{{- fail (printf "webhooks.endpoints: two secrets would be mounted as %s/%s (an endpoint's previous secret is <name>.previous): rename an endpoint" $dir $f) }}
{{- end }}
{{- end }}
{{- $w := default dict (index $cfg "webhooks") }}
{{- $_ := set $w "endpoints" $out }}
{{- $_ := set $cfg "webhooks" $w }}
{{- end }}
{{- $store := default dict (index $cfg "store") }}
{{- $_ := set $store "encryption_keys_file" (printf "%s/%s" (include "facegate.encryptionDir" .) .Values.encryption.key) }}
{{- $_ := set $cfg "store" $store }}
{{- range $listener := list "grpc" "http" }}
{{- $t := index $.Values.tls $listener }}
{{- if $t.secretName }}
{{- $dir := include "facegate.tlsDir" $listener }}
{{- $tt := dict "cert_file" (printf "%s/tls.crt" $dir) "key_file" (printf "%s/tls.key" $dir) "require_client_cert" $t.requireClientCert "reload_interval_ms" $t.reloadIntervalMs }}
{{- if $t.clientCa.enabled }}{{ $_ := set $tt "client_ca_file" (printf "%s/ca.crt" $dir) }}{{ end }}
{{- $l := default dict (index $cfg $listener) }}
{{- $_ := set $l "tls" $tt }}
{{- $_ := set $cfg $listener $l }}
{{- end }}
{{- end }}
{{- toJson $cfg }}
{{- end }}

{{/* A probe's action: GET `.` (a path) on the admin port, plaintext (see values.yaml, probes). */}}
{{- define "facegate.probeAction" -}}
httpGet:
  path: {{ . }}
  port: admin
  scheme: HTTP
{{- end }}

{{/* The public HTTP paths an Ingress or HTTPRoute may route: [{path, type}] with type Exact or Prefix. */}}
{{- define "facegate.publicPaths" -}}
[{"path": "/v1/callbacks/megvii/notify", "type": "Exact"}, {"path": "/v1/return", "type": "Prefix"}]
{{- end }}

{{/* Rules that a JSON schema cannot say clearly; called from the Deployment. */}}
{{- define "facegate.validate" -}}
{{- if not .Values.encryption.existingSecret }}
{{- fail "encryption.existingSecret is empty: facegate refuses to start without a data encryption key. Create a Secret with the key ring (helm/README.md, Encryption key) and name it in encryption.existingSecret" }}
{{- end }}
{{- $replicas := int64 .Values.replicaCount }}
{{- if not (include "facegate.externalDatabase" .) }}
{{- if gt $replicas 1 }}
{{- fail (printf "replicaCount %d needs database.external.existingSecret (PostgreSQL): the embedded SQLite store allows one replica" $replicas) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled needs database.external.existingSecret (PostgreSQL): the embedded SQLite store allows one replica" }}
{{- end }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int64 .Values.autoscaling.minReplicas) (int64 .Values.autoscaling.maxReplicas) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and (kindIs "invalid" .Values.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
{{- if .Values.podDisruptionBudget.enabled }}
{{- $min := .Values.podDisruptionBudget.minAvailable }}
{{- $max := .Values.podDisruptionBudget.maxUnavailable }}
{{- if eq (kindIs "invalid" $min) (kindIs "invalid" $max) }}
{{- fail "podDisruptionBudget: set exactly one of minAvailable and maxUnavailable" }}
{{- end }}
{{- end }}
{{- $managed := splitList " " (include "facegate.managedEnv" .) }}
{{- range $e := .Values.extraEnv }}
{{- if has $e.name $managed }}
{{- fail (printf "extraEnv must not set %s: the chart sets it (credentials come from vendorCredentials.existingSecret, the database URL from database.external, the encryption key ring from encryption)" $e.name) }}
{{- end }}
{{- range $prefix := list "FACEGATE__AUTH__" "FACEGATE__GRPC__TLS__" "FACEGATE__HTTP__TLS__" "FACEGATE__SANDBOX__" }}
{{- if hasPrefix $prefix $e.name }}
{{- fail (printf "extraEnv must not set %s: callers and TLS come from auth and tls (keys and certificates from Secrets), and the production image has no sandbox" $e.name) }}
{{- end }}
{{- end }}
{{- end }}
{{- include "facegate.validateAuth" . }}
{{- $_ := include "facegate.terminationGracePeriodSeconds" . }}
{{- end }}

{{/*
facegate.toml from a values map. Helm reads every YAML number as a float, and facegate's integer keys refuse
TOML floats, so whole numbers are written as integers (facegate reads an integer into a float key as well).
Keys with null values are left out, so facegate's default applies.
*/}}
{{- define "facegate.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if kindIs "float64" . }}{{ if eq (float64 (int64 .)) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) }}{{ . }}
{{- else if kindIs "slice" . }}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "facegate.tomlValue" $e }}{{ end }}]
{{- else }}{{ fail (printf "config: cannot write %v (%s) as TOML" . (kindOf .)) }}
{{- end }}
{{- end }}

{{- define "facegate.tomlIsTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) (kindIs "map" (first .)) }}true{{ end }}
{{- end }}

{{- define "facegate.tomlTable" -}}
{{- $path := .path }}
{{- range $k, $v := .table }}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (include "facegate.tomlIsTableArray" $v)) }}
{{ $k }} = {{ include "facegate.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := .table }}
{{- $p := ternary $k (printf "%s.%s" $path $k) (eq $path "") }}
{{- if kindIs "map" $v }}

[{{ $p }}]
{{- include "facegate.tomlTable" (dict "table" $v "path" $p) }}
{{- else if include "facegate.tomlIsTableArray" $v }}
{{- range $item := $v }}

[[{{ $p }}]]
{{- include "facegate.tomlTable" (dict "table" $item "path" $p) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
