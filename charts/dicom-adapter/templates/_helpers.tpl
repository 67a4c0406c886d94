{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "dicom-adapter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified release name (release-chart, or the release name when it holds the chart name).
Component suffixes (-import, -export) are appended, so this is kept to 55 characters.
*/}}
{{- define "dicom-adapter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dicom-adapter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "dicom-adapter.labels" -}}
helm.sh/chart: {{ include "dicom-adapter.chart" . }}
{{ include "dicom-adapter.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dicom-adapter
{{- end }}

{{- define "dicom-adapter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dicom-adapter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component: (dict "root" $ "component" "import").
*/}}
{{- define "dicom-adapter.componentLabels" -}}
{{ include "dicom-adapter.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dicom-adapter.componentSelectorLabels" -}}
{{ include "dicom-adapter.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dicom-adapter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dicom-adapter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dicom-adapter.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "dicom-adapter.importName" -}}
{{- printf "%s-import" (include "dicom-adapter.fullname" .) }}
{{- end }}

{{- define "dicom-adapter.exportName" -}}
{{- printf "%s-export" (include "dicom-adapter.fullname" .) }}
{{- end }}

{{/*
The import pod's termination grace: explicit, or preStop + shutdown grace + 75 s (the adapter
waits up to 60 s for in-flight uploads after the grace). An explicit value that would cut the
drain short is refused.
*/}}
{{- define "dicom-adapter.importTerminationGrace" -}}
{{- $v := .Values.import }}
{{- $floor := add (int $v.preStopSleepSeconds) (int (ceil $v.shutdownGrace)) }}
{{- if kindIs "invalid" $v.terminationGracePeriodSeconds }}
{{- add $floor 75 }}
{{- else if le (int $v.terminationGracePeriodSeconds) $floor }}
{{- fail (printf "import.terminationGracePeriodSeconds (%d) must be greater than import.preStopSleepSeconds + import.shutdownGrace (%d), or open associations are killed before they drain" (int $v.terminationGracePeriodSeconds) $floor) }}
{{- else }}
{{- int $v.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{- define "dicom-adapter.exportTerminationGrace" -}}
{{- $v := .Values.export }}
{{- $floor := int (ceil $v.shutdownGrace) }}
{{- if kindIs "invalid" $v.terminationGracePeriodSeconds }}
{{- add $floor 30 }}
{{- else if le (int $v.terminationGracePeriodSeconds) $floor }}
{{- fail (printf "export.terminationGracePeriodSeconds (%d) must be greater than export.shutdownGrace (%d), or running exports are killed before they finish" (int $v.terminationGracePeriodSeconds) $floor) }}
{{- else }}
{{- int $v.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
An env entry: (dict "name" "DICOM_ADAPTER_X" "value" v). Values are always strings; whole
numbers are written without an exponent (YAML numbers arrive as float64: 1048576 would
otherwise become "1.048576e+06").
*/}}
{{- define "dicom-adapter.env" -}}
{{- $value := .value }}
{{- if and (kindIs "float64" $value) (eq $value (floor $value)) }}
{{- $value = int64 $value }}
{{- end -}}
- name: {{ .name }}
  value: {{ toString $value | quote }}
{{- end }}

{{/*
DICOMweb authentication env entries for one component's auth values.
*/}}
{{- define "dicom-adapter.authEnv" -}}
{{ include "dicom-adapter.env" (dict "name" "DICOM_ADAPTER_AUTH" "value" .mode) }}
{{- if .oauthScopes }}
{{ include "dicom-adapter.env" (dict "name" "DICOM_ADAPTER_OAUTH_SCOPES" "value" .oauthScopes) }}
{{- end }}
{{- if .bearerTokenSecret }}
{{ include "dicom-adapter.env" (dict "name" "DICOM_ADAPTER_BEARER_TOKEN_FILE" "value" "/etc/dicom-adapter/bearer/token") }}
{{- end }}
{{- if .basicUser }}
{{ include "dicom-adapter.env" (dict "name" "DICOM_ADAPTER_BASIC_AUTH_USER" "value" .basicUser) }}
{{- end }}
{{- if .basicPasswordSecret }}
{{ include "dicom-adapter.env" (dict "name" "DICOM_ADAPTER_BASIC_AUTH_PASSWORD_FILE" "value" "/etc/dicom-adapter/basic/password") }}
{{- end }}
{{- if .caBundleConfigMap }}
{{ include "dicom-adapter.env" (dict "name" "DICOM_ADAPTER_CA_BUNDLE" "value" "/etc/dicom-adapter/ca/ca.pem") }}
{{- end }}
{{- end }}

{{/*
Volume mounts and volumes for the auth secrets of one component.
*/}}
{{- define "dicom-adapter.authMounts" -}}
{{- if .bearerTokenSecret }}
- name: bearer-token
  mountPath: /etc/dicom-adapter/bearer
  readOnly: true
{{- end }}
{{- if .basicPasswordSecret }}
- name: basic-password
  mountPath: /etc/dicom-adapter/basic
  readOnly: true
{{- end }}
{{- if .caBundleConfigMap }}
- name: ca-bundle
  mountPath: /etc/dicom-adapter/ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "dicom-adapter.authVolumes" -}}
{{- if .bearerTokenSecret }}
- name: bearer-token
  secret:
    secretName: {{ .bearerTokenSecret.name }}
    items:
      - key: {{ .bearerTokenSecret.key }}
        path: token
{{- end }}
{{- if .basicPasswordSecret }}
- name: basic-password
  secret:
    secretName: {{ .basicPasswordSecret.name }}
    items:
      - key: {{ .basicPasswordSecret.key }}
        path: password
{{- end }}
{{- if .caBundleConfigMap }}
- name: ca-bundle
  configMap:
    name: {{ .caBundleConfigMap.name }}
    items:
      - key: {{ .caBundleConfigMap.key }}
        path: ca.pem
{{- end }}
{{- end }}

{{/*
Probes on the metrics port.
*/}}
{{- define "dicom-adapter.probes" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: {{ .readiness.periodSeconds }}
  timeoutSeconds: {{ .readiness.timeoutSeconds }}
  failureThreshold: {{ .readiness.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ .liveness.periodSeconds }}
  timeoutSeconds: {{ .liveness.timeoutSeconds }}
  failureThreshold: {{ .liveness.failureThreshold }}
{{- end }}

{{/*
Prometheus scrape annotations.
*/}}
{{- define "dicom-adapter.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
