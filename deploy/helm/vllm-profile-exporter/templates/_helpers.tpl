{{- define "vllm-profile-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vllm-profile-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "vllm-profile-exporter.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "vllm-profile-exporter.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "vllm-profile-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vllm-profile-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vllm-profile-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "vllm-profile-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: metrics
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "vllm-profile-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vllm-profile-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vllm-profile-exporter.gpuSource" -}}
{{- if .Values.config.gpuSource }}{{ .Values.config.gpuSource }}
{{- else if eq .Values.mode "sidecar" }}dcgm
{{- else }}none
{{- end }}
{{- end }}

{{/* The exporter container; the same in the Deployment and in the sidecar snippet. */}}
{{- define "vllm-profile-exporter.container" -}}
{{- $c := .Values.config -}}
{{- $gpu := include "vllm-profile-exporter.gpuSource" . -}}
name: vllm-profile-exporter
image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
args:
  - serve
  - --web.listen-address=:{{ .Values.port }}
  {{- if eq .Values.mode "sidecar" }}
  - --vllm-url=http://localhost:{{ $c.sidecarVllmPort }}
  {{- else }}
  - --vllm-url={{ $c.vllmUrl }}
  {{- end }}
  - --gpu-source={{ $gpu }}
  {{- if eq $gpu "dcgm" }}
  - --dcgm-url={{ $c.dcgm.url }}
  {{- end }}
  {{- with $c.maxNumSeqs }}
  - --max-num-seqs={{ . }}
  {{- end }}
  {{- with $c.tensorParallelSize }}
  - --tensor-parallel-size={{ . }}
  {{- end }}
  {{- with $c.dtype }}
  - --dtype={{ . }}
  {{- end }}
  {{- with $c.costPerHour }}
  - --cost-per-hour={{ . }}
  {{- end }}
  {{- with $c.modelParams }}
  - --model-params={{ . }}
  {{- end }}
  {{- if $c.catalog }}
  - --catalog-file=/etc/vllm-profile-exporter/catalog.yaml
  {{- end }}
  - --price={{ $c.price }}
  - --compute-peak={{ $c.computePeak }}
  - --horizon={{ $c.horizon }}
  - --poll-interval={{ $c.pollInterval }}
  - --calm-poll-interval={{ $c.calmPollInterval }}
  {{- if and (eq $gpu "dcgm") $c.dcgm.pollInterval }}
  - --dcgm-poll-interval={{ $c.dcgm.pollInterval }}
  {{- end }}
  - --log-level={{ $c.logLevel }}
  {{- range $c.extraArgs }}
  - {{ . | quote }}
  {{- end }}
{{- if eq $gpu "dcgm" }}
env:
  - name: NODE_IP
    valueFrom: {fieldRef: {fieldPath: status.hostIP}}
  {{- if and (eq .Values.mode "sidecar") $c.dcgm.podAttribution }}
  - name: VLLM_PROFILE_DCGM_POD
    valueFrom: {fieldRef: {fieldPath: metadata.name}}
  - name: VLLM_PROFILE_DCGM_NAMESPACE
    valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
  {{- else if $c.dcgm.pod }}
  - name: VLLM_PROFILE_DCGM_POD
    value: {{ $c.dcgm.pod | quote }}
  - name: VLLM_PROFILE_DCGM_NAMESPACE
    value: {{ $c.dcgm.namespace | default .Release.Namespace | quote }}
  {{- end }}
{{- end }}
ports:
  - name: vllm-profile
    containerPort: {{ .Values.port }}
    protocol: TCP
livenessProbe:
  {{- toYaml .Values.livenessProbe | nindent 2 }}
readinessProbe:
  {{- toYaml .Values.readinessProbe | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- if $c.catalog }}
volumeMounts:
  - name: vllm-profile-exporter-catalog
    mountPath: /etc/vllm-profile-exporter
    readOnly: true
{{- end }}
{{- end }}
