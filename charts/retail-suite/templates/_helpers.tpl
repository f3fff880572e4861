{{/* The chart's name. */}}
{{- define "retail-suite.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* `<release>-retail-suite`, or the release name when it already holds the chart's name. */}}
{{- define "retail-suite.fullname" -}}
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

{{/* A service's resource name: (list $ "orders") -> `<fullname>-orders`. */}}
{{- define "retail-suite.serviceName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "retail-suite.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "retail-suite.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource; (list $ "orders") adds the service's component. */}}
{{- define "retail-suite.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "retail-suite.chart" $root }}
{{ include "retail-suite.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: retail-suite
{{- with $root.Values.global.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: (list $ "orders"), or (list $) for the whole release. */}}
{{- define "retail-suite.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "retail-suite.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- if gt (len .) 1 }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}
{{- end }}

{{- define "retail-suite.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "retail-suite.secretName" -}}
{{- if .Values.secrets.create }}
{{- printf "%s-secrets" (include "retail-suite.fullname" .) }}
{{- else }}
{{- required "secrets.existingSecret must name a Secret when secrets.create is false" .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{/*
A service's settings as one map: the global ones, the wiring to other services
(`urls`), the listener and metrics ports, then its own `config`.
(list $ name service)
*/}}
{{- define "retail-suite.settings" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $svc := index . 2 }}
{{- $settings := deepCopy $root.Values.global.config }}
{{- if not (include "retail-suite.hasDatabase" $svc) }}
{{- $_ := unset $settings "database" }}
{{- end }}
{{- $server := dict }}
{{- with $svc.ports.grpc }}{{ $_ := set $server "port" . }}{{ end }}
{{- with $svc.ports.metrics }}{{ $_ := set $server "metrics_port" . }}{{ end }}
{{- $wiring := dict "server" $server }}
{{- if $svc.replicasSetting }}
{{- $parts := splitList "." $svc.replicasSetting }}
{{- $section := default (dict) (get $wiring (index $parts 0)) }}
{{- $_ := set $section (index $parts 1) (ternary $svc.autoscaling.maxReplicas $svc.replicaCount $svc.autoscaling.enabled) }}
{{- $_ := set $wiring (index $parts 0) $section }}
{{- end }}
{{- if and $svc.ports.http $svc.httpPortSetting }}
{{- $parts := splitList "." $svc.httpPortSetting }}
{{- $section := default (dict) (get $wiring (index $parts 0)) }}
{{- $_ := set $section (index $parts 1) $svc.ports.http }}
{{- $_ := set $wiring (index $parts 0) $section }}
{{- end }}
{{- range $key, $target := $svc.urls }}
{{- $callee := index $root.Values.services $target }}
{{- if not $callee }}
{{- fail (printf "services.%s.urls.%s names the unknown service %s" $name $key $target) }}
{{- end }}
{{- if not $callee.ports.grpc }}
{{- fail (printf "services.%s.urls.%s names %s, which has no gRPC port" $name $key $target) }}
{{- end }}
{{- if $callee.enabled }}
{{- $parts := splitList "." $key }}
{{- $url := printf "http://%s:%v" (include "retail-suite.serviceName" (list $root $target)) $callee.ports.grpc }}
{{- $section := default (dict) (get $wiring (index $parts 0)) }}
{{- $_ := set $section (index $parts 1) $url }}
{{- $_ := set $wiring (index $parts 0) $section }}
{{- end }}
{{- end }}
{{- $settings = mergeOverwrite $settings $wiring (deepCopy (default (dict) $svc.config)) }}
{{- toYaml $settings }}
{{- end }}

{{/*
Settings flattened to `RETAIL_<PREFIX>__SECTION__KEY: "value"` lines.
(dict "prefix" "RETAIL_ORDERS" "settings" map)
*/}}
{{- define "retail-suite.flatten" -}}
{{- $prefix := .prefix }}
{{- range $key, $value := .settings }}
{{- $name := printf "%s__%s" $prefix (upper $key) }}
{{- if kindIs "map" $value }}
{{- include "retail-suite.flatten" (dict "prefix" $name "settings" $value) }}
{{- else if kindIs "slice" $value }}
{{ $name }}: {{ toJson $value | quote }}
{{- else if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{ $name }}: {{ int64 $value | quote }}
{{- else if kindIs "invalid" $value }}
{{- else }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The environment variable of a setting: (list "ORDERS" "auth.client_secret"). */}}
{{- define "retail-suite.settingEnv" -}}
{{- printf "RETAIL_%s__%s" (index . 0) (index . 1 | upper | replace "." "__") }}
{{- end }}

{{/* Environment read from the Secret: (list $ service). */}}
{{- define "retail-suite.secretEnv" -}}
{{- $root := index . 0 }}
{{- $svc := index . 1 }}
{{- range $setting, $key := $svc.secretEnv }}
- name: {{ include "retail-suite.settingEnv" (list $svc.envPrefix $setting) }}
  valueFrom:
    secretKeyRef:
      name: {{ include "retail-suite.secretName" $root }}
      key: {{ $key }}
      {{- if eq $setting "bootstrap.admin_password" }}
      optional: true
      {{- end }}
{{- end }}
{{- range $setting, $key := $svc.optionalSecretEnv }}
- name: {{ include "retail-suite.settingEnv" (list $svc.envPrefix $setting) }}
  valueFrom:
    secretKeyRef:
      name: {{ include "retail-suite.secretName" $root }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}

{{/* "true" when the service has a database (every service but those with `database: false`). */}}
{{- define "retail-suite.hasDatabase" -}}
{{- if not (and (hasKey . "database") (eq (toString .database) "false")) }}true{{ end }}
{{- end }}

{{/* Seconds a pod needs to stop: drain grace + drain timeout + margin. (list $ service) */}}
{{- define "retail-suite.terminationGracePeriod" -}}
{{- $root := index . 0 }}
{{- $svc := index . 1 }}
{{- $server := mergeOverwrite (deepCopy $root.Values.global.config.server) (default (dict) (default (dict) $svc.config).server) }}
{{- $ms := add (default 0 $server.drain_grace_ms) (default 20000 $server.drain_timeout_ms) }}
{{- add (div (add $ms 999) 1000) $root.Values.global.terminationMarginSeconds }}
{{- end }}

{{/* The hardened security contexts. */}}
{{- define "retail-suite.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "retail-suite.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Startup, readiness and liveness probes of one kind: a dict such as (dict "grpc" (dict "port" 50051)). */}}
{{- define "retail-suite.probes" -}}
startupProbe:
  {{- toYaml . | nindent 2 }}
  periodSeconds: 2
  failureThreshold: 60
readinessProbe:
  {{- toYaml . | nindent 2 }}
  periodSeconds: 2
  failureThreshold: 1
  successThreshold: 1
livenessProbe:
  {{- toYaml . | nindent 2 }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
{{- end }}
