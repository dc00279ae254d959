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
FACEGATE_CONFIG FACEGATE__GRPC__LISTEN FACEGATE__HTTP__LISTEN FACEGATE__STORE__SQLITE_PATH FACEGATE__STORE__DATABASE_URL FACEGATE__JUHE__KEY FACEGATE__JUHE__OPENID FACEGATE__BAIDU__API_KEY FACEGATE__BAIDU__SECRET_KEY FACEGATE__MEGVII__API_KEY FACEGATE__MEGVII__API_SECRET
{{- end }}

{{/* Rules that a JSON schema cannot say clearly; called from the Deployment. */}}
{{- define "facegate.validate" -}}
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
{{- range .Values.extraEnv }}
{{- if has .name $managed }}
{{- fail (printf "extraEnv must not set %s: the chart sets it (credentials come from vendorCredentials.existingSecret, the database URL from database.external)" .name) }}
{{- end }}
{{- end }}
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
