{{/* Names and labels. */}}
{{- define "ksr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ksr.fullname" -}}
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

{{- define "ksr.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ksr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ksr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Not app.kubernetes.io/managed-by: kube-stream-runner, which marks the Jobs the runner creates. */}}
{{- define "ksr.labels" -}}
helm.sh/chart: {{ include "ksr.chart" . }}
{{ include "ksr.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* An object's metadata.annotations: commonAnnotations and the object's own (which win), or
nothing. Call with (dict "root" $ "own" <map or nil>) right after the labels: it starts a line. */}}
{{- define "ksr.annotations" -}}
{{- $all := merge (deepCopy (.own | default dict)) (.root.Values.commonAnnotations | default dict) }}
{{- with $all }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{- define "ksr.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ksr.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ksr.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}{{ $repository = printf "%s/%s" . $repository }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The runner container's env that the chart sets itself (extraEnvVars may not repeat a name). */}}
{{- define "ksr.chartEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: HTTP_SERVER_PORT
  value: {{ .Values.httpPort | quote }}
- name: KSR_RUNTIME_DIR
  value: /run/ksr
- name: PROMETHEUS_MULTIPROC_DIR
  value: /run/ksr/metrics
- name: TMPDIR
  value: /tmp
{{- with .Values.secrets.existingSecret }}
{{- range $variable, $key := $.Values.secrets.keys }}
{{- if $key }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.secrets.existingSecret }}
      key: {{ $key }}
      {{- if eq $variable "KSR_WEBHOOK_SECRET" }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The console's token comes from the Secret: "true" when it is read. */}}
{{- define "ksr.consoleToken" -}}
{{- if and .Values.secrets.existingSecret .Values.secrets.keys.KSR_CONSOLE_TOKEN }}true{{ end }}
{{- end }}

{{/* KSR_CONSOLE_ENABLED: on when asked, unless reading needs a token there is not. */}}
{{- define "ksr.consoleEnabled" -}}
{{- $c := .Values.console -}}
{{- if and $c.actions (not (include "ksr.consoleToken" .)) }}
{{- fail "console.actions: needs the operators' token: secrets.existingSecret with secrets.keys.KSR_CONSOLE_TOKEN" }}
{{- end }}
{{- if and $c.enabled (or (not $c.readAuth) (include "ksr.consoleToken" .)) }}true{{ else }}false{{ end }}
{{- end }}

{{/* REDIS_URL comes from the Secret (else redis.url, in the ConfigMap). */}}
{{- define "ksr.redisUrlFromSecret" -}}
{{- if and .Values.secrets.existingSecret .Values.secrets.keys.REDIS_URL }}true{{ end }}
{{- end }}

{{/* Namespaces Jobs may be created in: config.allowedNamespaces, else the release namespace. */}}
{{- define "ksr.jobNamespaces" -}}
{{- $ns := .Values.config.allowedNamespaces | default (list .Release.Namespace) }}
{{- join "," (uniq $ns) }}
{{- end }}

{{/* The runner's own ConfigMaps and Secrets, which no message may envRef or mount. */}}
{{- define "ksr.protectedNames" -}}
{{- $fullname := include "ksr.fullname" . }}
{{- $names := list $fullname (printf "%s-dashboard" $fullname) (printf "%s-schedules" $fullname) }}
{{- with .Values.secrets.existingSecret }}{{ $names = append $names . }}{{ end }}
{{- with .Values.redis.tls.secretName }}{{ $names = append $names . }}{{ end }}
{{- with .Values.extraEnvVarsCM }}{{ $names = append $names . }}{{ end }}
{{- with .Values.extraEnvVarsSecret }}{{ $names = append $names . }}{{ end }}
{{- range .Values.extraEnvVars }}
{{- range $kind, $ref := (.valueFrom | default dict) }}
{{- if and (has $kind (list "secretKeyRef" "configMapKeyRef")) $ref.name }}{{ $names = append $names $ref.name }}{{ end }}
{{- end }}
{{- end }}
{{- range .Values.extraVolumes }}
{{- with .secret }}{{ with .secretName }}{{ $names = append $names . }}{{ end }}{{ end }}
{{- with .configMap }}{{ with .name }}{{ $names = append $names . }}{{ end }}{{ end }}
{{- with .persistentVolumeClaim }}{{ with .claimName }}{{ $names = append $names . }}{{ end }}{{ end }}
{{- end }}
{{- join "," (uniq (concat $names .Values.config.protectedNames)) }}
{{- end }}

{{- define "ksr.clusterWide" -}}
{{- if has "*" (splitList "," (include "ksr.jobNamespaces" .)) }}true{{- end }}
{{- end }}

{{/* Settings that cannot be checked by the schema alone. */}}
{{- define "ksr.validate" -}}
{{- $lease := .Values.config.lease }}
{{- if le (float64 $lease.durationSeconds) (float64 $lease.renewDeadlineSeconds) }}
{{- fail "config.lease.durationSeconds must exceed config.lease.renewDeadlineSeconds" }}
{{- end }}
{{- if le (float64 $lease.renewDeadlineSeconds) (mulf 1.2 (float64 $lease.retryPeriodSeconds)) }}
{{- fail "config.lease.renewDeadlineSeconds must exceed 1.2 x config.lease.retryPeriodSeconds" }}
{{- end }}
{{- $blockMs := float64 (dig "KSR_BLOCK_MS" 2000 .Values.config.extraEnv) }}
{{- if gt $blockMs (mulf 1000.0 (subf (float64 $lease.durationSeconds) (float64 $lease.renewDeadlineSeconds))) }}
{{- fail "KSR_BLOCK_MS (config.extraEnv, default 2000) must not exceed config.lease.durationSeconds - config.lease.renewDeadlineSeconds, in ms" }}
{{- end }}
{{- if ge (addf (float64 .Values.shutdownGraceSeconds) 5.0) (float64 .Values.terminationGracePeriodSeconds) }}
{{- fail "terminationGracePeriodSeconds must exceed shutdownGraceSeconds + 5 (the children's grace)" }}
{{- end }}
{{- if ge (float64 .Values.config.pollingIntervalSeconds) (float64 .Values.config.stuckThresholdSeconds) }}
{{- fail "config.pollingIntervalSeconds must be shorter than config.stuckThresholdSeconds" }}
{{- end }}
{{- if and (has "*" .Values.config.allowedNamespaces) (gt (len .Values.config.allowedNamespaces) 1) }}
{{- fail "config.allowedNamespaces: \"*\" must be alone" }}
{{- end }}
{{- if not (or (include "ksr.redisUrlFromSecret" .) .Values.redis.url) }}
{{- fail "set redis.url or secrets.existingSecret (with secrets.keys.REDIS_URL)" }}
{{- end }}
{{- $chartEnv := list }}
{{- range (include "ksr.chartEnv" . | fromYamlArray) }}{{ $chartEnv = append $chartEnv .name }}{{ end }}
{{- range $i, $var := .Values.extraEnvVars }}
{{- if has $var.name $chartEnv }}
{{- fail (printf "extraEnvVars[%d].name: %s is set by the chart already (set it through the chart's value for it, e.g. secrets.keys)" $i $var.name) }}
{{- end }}
{{- end }}
{{- $chartVolumes := list "runtime" "tmp" "schedules" "redis-tls" }}
{{- range $i, $volume := .Values.extraVolumes }}
{{- if has $volume.name $chartVolumes }}
{{- fail (printf "extraVolumes[%d].name: %s is one of the chart's volumes (%s)" $i $volume.name (join ", " $chartVolumes)) }}
{{- end }}
{{- end }}
{{- $containers := list "runner" }}
{{- range $i, $c := concat .Values.initContainers .Values.sidecars }}
{{- if has $c.name $containers }}
{{- fail (printf "initContainers/sidecars: container name %s is used twice (runner is the chart's)" $c.name) }}
{{- end }}
{{- $containers = append $containers $c.name }}
{{- end }}
{{- if and .Values.redis.sentinels (eq (toString (.Values.config.extraEnv.KSR_LOCK | default "lease")) "redis") }}
{{- fail "KSR_LOCK=redis cannot be used with redis.sentinels (KSR_REDIS_SENTINELS): the Lease lock is required (docs/redis.md)" }}
{{- end }}
{{- if and .Values.redis.tls.certKey (not .Values.redis.tls.keyKey) }}
{{- fail "redis.tls.certKey needs redis.tls.keyKey" }}
{{- end }}
{{- end }}

{{/* What the runner does with Jobs and their Pods in a namespace it may create Jobs in:
exactly the calls of runner/jobs/kube.py (tests/integration/test_chart.py compares them).
patch: only to take its finalizer off a Job whose end is recorded. */}}
{{- define "ksr.jobRules" -}}
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
{{- end }}

{{- define "ksr.subject" -}}
- kind: ServiceAccount
  name: {{ include "ksr.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/*
A value for the environment, as text. YAML numbers reach templates as float64, and toString
writes a large whole number with an exponent (1209600 -> "1.2096e+06"), which the runner's
integer settings refuse; whole numbers are written as integers.
*/}}
{{- define "ksr.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- int64 . | toString -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}
