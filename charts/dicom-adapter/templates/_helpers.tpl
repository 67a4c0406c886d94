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
The import workload's kind: a StatefulSet (one PersistentVolumeClaim per pod) with the durable
spool (import.spool.enabled or import.spool.autoAck), else a Deployment.
*/}}
{{- define "dicom-adapter.importKind" -}}
{{- (or .Values.import.spool.enabled .Values.import.spool.autoAck) | ternary "StatefulSet" "Deployment" }}
{{- end }}

{{/*
The fewest pods a component runs, given its values (.Values.import or .Values.export):
autoscaling.minReplicas while autoscaling is on, else replicas.
*/}}
{{- define "dicom-adapter.replicaFloor" -}}
{{- if .autoscaling.enabled }}
{{- int .autoscaling.minReplicas }}
{{- else }}
{{- int .replicas }}
{{- end }}
{{- end }}

{{/*
Whether a component's PodDisruptionBudget is rendered ("true" or ""): enabled, and more than
one pod may run (replicas > 1, or autoscaling on). A budget over a single pod protects nothing.
*/}}
{{- define "dicom-adapter.pdbWanted" -}}
{{- if and .podDisruptionBudget.enabled (or .autoscaling.enabled (gt (int .replicas) 1)) }}true{{ end }}
{{- end }}

{{/*
A component's PodDisruptionBudget: (dict "root" $ "component" "import" "values" .Values.import).
Always maxUnavailable (never minAvailable), so that a node drain is never blocked for good.
*/}}
{{- define "dicom-adapter.pdb" -}}
{{- $component := dict "root" .root "component" .component }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ printf "%s-%s" (include "dicom-adapter.fullname" .root) .component }}
  labels:
    {{- include "dicom-adapter.componentLabels" $component | nindent 4 }}
spec:
  maxUnavailable: {{ include "dicom-adapter.number" .values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "dicom-adapter.componentSelectorLabels" $component | nindent 6 }}
{{- end }}

{{/*
A component's HorizontalPodAutoscaler spec lines shared by both adapters: scale target,
bounds, the CPU metric; (dict "kind" KIND "name" NAME "autoscaling" VALUES). The caller adds
its own metrics after these, then the behavior.
*/}}
{{- define "dicom-adapter.hpaSpecHead" -}}
scaleTargetRef:
  apiVersion: apps/v1
  kind: {{ .kind }}
  name: {{ .name }}
minReplicas: {{ int .autoscaling.minReplicas }}
maxReplicas: {{ int .autoscaling.maxReplicas }}
metrics:
{{- if not (kindIs "invalid" .autoscaling.targetCPUUtilizationPercentage) }}
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: {{ int .autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}

{{/*
Autoscaling checks for one component: (dict "name" "import" "values" .Values.import).
*/}}
{{- define "dicom-adapter.validateAutoscaling" -}}
{{- $v := .values }}
{{- $a := $v.autoscaling }}
{{- if $a.enabled }}
{{- if lt (int $a.maxReplicas) (int $a.minReplicas) }}
{{- fail (printf "%s.autoscaling.maxReplicas (%d) must be at least %s.autoscaling.minReplicas (%d)" .name (int $a.maxReplicas) .name (int $a.minReplicas)) }}
{{- end }}
{{- $customName := ternary "openAssociations" "pubsubBacklog" (eq .name "import") }}
{{- $custom := get $a $customName }}
{{- if and (kindIs "invalid" $a.targetCPUUtilizationPercentage) (not (and $custom $custom.enabled)) }}
{{- fail (printf "%s.autoscaling: no metric to scale on: set targetCPUUtilizationPercentage or turn on %s.enabled" .name $customName) }}
{{- end }}
{{- if and (not (kindIs "invalid" $a.targetCPUUtilizationPercentage)) (not (dig "requests" "cpu" "" ($v.resources | default dict))) }}
{{- fail (printf "%s.autoscaling.targetCPUUtilizationPercentage needs %s.resources.requests.cpu: CPU utilisation is measured against the request" .name .name) }}
{{- end }}
{{- end }}
{{- if and $v.podDisruptionBudget.enabled (not (kindIs "string" $v.podDisruptionBudget.maxUnavailable)) }}
{{- $floor := int (include "dicom-adapter.replicaFloor" $v) }}
{{- if and (gt $floor 1) (ge (int $v.podDisruptionBudget.maxUnavailable) $floor) }}
{{- fail (printf "%s.podDisruptionBudget.maxUnavailable (%d) must be less than %s (%d), or a node drain may evict every pod at once" .name (int $v.podDisruptionBudget.maxUnavailable) (ternary (printf "%s.autoscaling.minReplicas" .name) (printf "%s.replicas" .name) (and $a.enabled true)) $floor) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The export subscription's project and id as JSON ({"project": P, "id": S}), from
export.subscriptionId (an id, or projects/P/subscriptions/S) and export.projectId.
*/}}
{{- define "dicom-adapter.exportSubscription" -}}
{{- $v := .Values.export }}
{{- $parts := splitList "/" $v.subscriptionId }}
{{- if and (hasPrefix "projects/" $v.subscriptionId) (eq (len $parts) 4) }}
{{- dict "project" (index $parts 1) "id" (index $parts 3) | toJson }}
{{- else }}
{{- dict "project" $v.projectId "id" $v.subscriptionId | toJson }}
{{- end }}
{{- end }}

{{/*
A number or quantity as a string: whole numbers without an exponent (YAML numbers arrive as
float64), strings as they are.
*/}}
{{- define "dicom-adapter.number" -}}
{{- $value := . }}
{{- if and (kindIs "float64" $value) (eq $value (floor $value)) }}
{{- $value = int64 $value }}
{{- end }}
{{- toString $value }}
{{- end }}

{{/*
The import pod's termination grace: explicit, or preStopSleepSeconds + shutdownGrace +
spool.drainTimeoutSeconds + 90 s. After SIGTERM the adapter gives open associations
shutdownGrace, operations still in flight up to 60 s more, keeps uploading its spool for up to
drainTimeoutSeconds (with routing rules even without spool.enabled), then gives Storage
Commitment reports 15 s and uploads in flight 10 s; 5 s margin. An explicit value that would
cut the drain short is refused.
*/}}
{{- define "dicom-adapter.importTerminationGrace" -}}
{{- $v := .Values.import }}
{{- $floor := add (int $v.preStopSleepSeconds) (int (ceil $v.shutdownGrace)) (int (ceil $v.spool.drainTimeoutSeconds)) }}
{{- if kindIs "invalid" $v.terminationGracePeriodSeconds }}
{{- add $floor 90 }}
{{- else if le (int $v.terminationGracePeriodSeconds) $floor }}
{{- fail (printf "import.terminationGracePeriodSeconds (%d) must be greater than import.preStopSleepSeconds + import.shutdownGrace + import.spool.drainTimeoutSeconds (%d), or open associations and queued uploads are cut off before they drain" (int $v.terminationGracePeriodSeconds) $floor) }}
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
