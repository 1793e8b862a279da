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

{{/* dcgm-exporter's URL: the one given, else the node-local Service this chart renders. */}}
{{- define "vllm-profile-exporter.dcgmUrl" -}}
{{- $d := .Values.config.dcgm -}}
{{- if $d.url }}{{ $d.url }}
{{- else }}http://{{ include "vllm-profile-exporter.fullname" . }}-dcgm.{{ $d.localService.namespace }}.svc:{{ $d.localService.port }}/metrics
{{- end }}
{{- end }}

{{/* The /metrics endpoint's scheme, TLS and basic auth, for ServiceMonitor and PodMonitor. */}}
{{- define "vllm-profile-exporter.scrapeAuth" -}}
{{- $w := .Values.webConfig -}}
{{- if $w.tls }}
scheme: https
{{- with $w.scrapeTlsConfig }}
tlsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- if $w.basicAuth }}
{{- if not $w.scrapeBasicAuth }}
{{- fail "webConfig.basicAuth needs webConfig.scrapeBasicAuth: the Secret keys Prometheus presents" }}
{{- end }}
basicAuth:
  {{- toYaml $w.scrapeBasicAuth | nindent 2 }}
{{- end }}
{{- end }}

{{/* A probe of the exporter: HTTP(S) GET, or the port alone where basic auth covers every path
     (the kubelet sends no credentials, and a 401 fails a probe). */}}
{{- define "vllm-profile-exporter.probe" -}}
{{- if .root.Values.webConfig.basicAuth -}}
tcpSocket: {port: vllm-profile}
{{- else -}}
httpGet: {path: {{ .path }}, port: vllm-profile{{ if .root.Values.webConfig.tls }}, scheme: HTTPS{{ end }}}
{{- end }}
{{- with .probe }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The exporter container; the same in the Deployment and in the sidecar snippet. */}}
{{- define "vllm-profile-exporter.container" -}}
{{- $c := .Values.config -}}
{{- $gpu := include "vllm-profile-exporter.gpuSource" . -}}
name: vllm-profile-exporter
image: {{ include "vllm-profile-exporter.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args:
  - serve
  - --web.listen-address=:{{ .Values.port }}
  - --engine={{ $c.engine }}
  {{- if eq .Values.mode "sidecar" }}
  - --vllm-url=http://localhost:{{ $c.sidecarVllmPort }}
  {{- else }}
  - --vllm-url={{ $c.vllmUrl }}
  {{- end }}
  - --gpu-source={{ $gpu }}
  {{- if eq $gpu "dcgm" }}
  - --dcgm-url={{ include "vllm-profile-exporter.dcgmUrl" . }}
  {{- end }}
  {{- if .Values.webConfig.secretName }}
  - --web.config.file=/etc/vllm-profile-exporter-web/web-config.yml
  {{- end }}
  {{- if and (eq .Values.mode "sidecar") $c.podSettings }}
  - --pod-annotations=/etc/vllm-profile-exporter-pod/annotations
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
  - --idle-poll-interval={{ $c.idlePollInterval }}
  {{- if and (eq $gpu "dcgm") $c.dcgm.pollInterval }}
  - --dcgm-poll-interval={{ $c.dcgm.pollInterval }}
  {{- end }}
  - --log-level={{ $c.logLevel }}
  {{- range $c.extraArgs }}
  - {{ . | quote }}
  {{- end }}
{{- $nodeIp := and (eq $gpu "dcgm") (contains "$(NODE_IP)" (include "vllm-profile-exporter.dcgmUrl" .)) }}
{{- $podEnv := and (eq $gpu "dcgm") (or (and (eq .Values.mode "sidecar") $c.dcgm.podAttribution) $c.dcgm.pod) }}
{{- $revision := and (eq .Values.mode "sidecar") $c.revisionLabel }}
{{- if or $revision $nodeIp $podEnv .Values.extraEnv }}
env:
  {{- if $revision }}
  # The vLLM pod's template hash: a rollout that changes the pod's spec is a new configuration
  # (vllm_profile_info{config_id}); a replaced pod of the same template is not.
  - name: VLLM_PROFILE_CONFIG_REVISION
    valueFrom: {fieldRef: {fieldPath: "metadata.labels['{{ $c.revisionLabel }}']"}}
  {{- end }}
  {{- if $nodeIp }}
  - name: NODE_IP
    valueFrom: {fieldRef: {fieldPath: status.hostIP}}
  {{- end }}
  {{- if eq $gpu "dcgm" }}
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
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
ports:
  - name: vllm-profile
    containerPort: {{ .Values.port }}
    protocol: TCP
livenessProbe:
  {{- include "vllm-profile-exporter.probe" (dict "root" . "path" "/-/healthy" "probe" .Values.livenessProbe) | nindent 2 }}
{{- if ne .Values.mode "sidecar" }}
{{- /* Not in the vLLM pod: a pod is Ready only when every container is, and an exporter
       waiting for its first poll must not take vLLM out of its Service. */}}
readinessProbe:
  {{- include "vllm-profile-exporter.probe" (dict "root" . "path" "/-/ready" "probe" .Values.readinessProbe) | nindent 2 }}
{{- end }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- if eq .Values.mode "sidecar" }}
  {{- /* In a vLLM pod (often root), the pod's context is vLLM's: the sidecar sets its own. */}}
  {{- $own := dict "runAsNonRoot" true "runAsUser" .Values.podSecurityContext.runAsUser "runAsGroup" .Values.podSecurityContext.runAsGroup "seccompProfile" .Values.podSecurityContext.seccompProfile }}
  {{- toYaml (merge (deepCopy .Values.securityContext) $own) | nindent 2 }}
  {{- else }}
  {{- toYaml .Values.securityContext | nindent 2 }}
  {{- end }}
{{- $podFile := and (eq .Values.mode "sidecar") $c.podSettings }}
{{- if or $podFile $c.catalog .Values.webConfig.secretName .Values.extraVolumeMounts }}
volumeMounts:
  {{- if $podFile }}
  - name: vllm-profile-exporter-pod
    mountPath: /etc/vllm-profile-exporter-pod
    readOnly: true
  {{- end }}
  {{- if $c.catalog }}
  - name: vllm-profile-exporter-catalog
    mountPath: /etc/vllm-profile-exporter
    readOnly: true
  {{- end }}
  {{- if .Values.webConfig.secretName }}
  - name: vllm-profile-exporter-web
    mountPath: /etc/vllm-profile-exporter-web
    readOnly: true
  {{- end }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The volumes the container mounts; the Deployment's, and for the vLLM pod in sidecar mode. */}}
{{- define "vllm-profile-exporter.volumes" -}}
{{- if and (eq .Values.mode "sidecar") .Values.config.podSettings }}
- name: vllm-profile-exporter-pod
  downwardAPI:
    items:
      - path: annotations
        fieldRef: {fieldPath: metadata.annotations}
{{- end }}
{{- if .Values.config.catalog }}
- name: vllm-profile-exporter-catalog
  configMap:
    name: {{ include "vllm-profile-exporter.fullname" . }}-catalog
{{- end }}
{{- if .Values.webConfig.secretName }}
- name: vllm-profile-exporter-web
  secret:
    secretName: {{ .Values.webConfig.secretName }}
{{- end }}
{{- with .Values.extraVolumes }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}

{{- /* "true" when ServiceMonitor, PodMonitor and PrometheusRule may render: the API server
       advertises monitoring.coreos.com/v1, or assumeMonitoringApi says so (helm template). */}}
{{- define "vllm-profile-exporter.monitoringApi" -}}
{{- if or .Values.assumeMonitoringApi (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}true{{ end }}
{{- end }}

{{- /* The label names the exporter's own series carry: a pod or Service label copied onto every
       series under one of these names would rename the exporter's (Prometheus keeps the target's
       and writes exported_<name>), and every rule and dashboard reading it would miss. */}}
{{- define "vllm-profile-exporter.exportedLabels" -}}
UUID cause compute_peak config_id declared direction dtype dtype_source engine finished_reason fix gpu gpu_catalog gpu_name group limit mode model model_catalog model_matched_on model_root name pipeline_parallel_size pipeline_parallel_size_source price_source reason rule source tensor_parallel_size tensor_parallel_size_source variant version
{{- end }}

{{- define "vllm-profile-exporter.checkTargetLabels" -}}
{{- $taken := include "vllm-profile-exporter.exportedLabels" . | splitList " " }}
{{- range $label := concat .Values.podMonitor.podTargetLabels .Values.serviceMonitor.podTargetLabels .Values.serviceMonitor.targetLabels }}
{{- if has $label $taken }}
{{- fail (printf "podTargetLabels/targetLabels: %q is a label of the exporter's own series (vllm_profile_info{%s=...} and others); copying a pod label under that name would rename the exporter's to exported_%s and break the rules and dashboards. Relabel it (e.g. to app_%s) instead." $label $label $label $label) }}
{{- end }}
{{- end }}
{{- end }}

{{/* registry/repository:tag, or registry/repository@digest; global.imageRegistry wins. */}}
{{- define "vllm-profile-exporter.image" -}}
{{- $i := .Values.image -}}
{{- $registry := $i.registry -}}
{{- with .Values.global }}{{ with .imageRegistry }}{{ $registry = . }}{{ end }}{{ end -}}
{{- $name := $i.repository -}}
{{- if $registry }}{{ $name = printf "%s/%s" $registry $i.repository }}{{ end -}}
{{- if $i.digest -}}
{{ $name }}@{{ $i.digest }}
{{- else -}}
{{ $name }}:{{ $i.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The release's pull secrets, then the parent chart's global ones. */}}
{{- define "vllm-profile-exporter.pullSecrets" -}}
{{- $secrets := .Values.imagePullSecrets -}}
{{- with .Values.global }}{{ with .imagePullSecrets }}{{ $secrets = concat $secrets . }}{{ end }}{{ end -}}
{{- with $secrets }}{{ toYaml . }}{{ end -}}
{{- end -}}

{{/* A monitor's own namespace (default: the release's). */}}
{{- define "vllm-profile-exporter.monitorNamespace" -}}
{{ .monitor.namespace | default .root.Release.Namespace }}
{{- end -}}

{{/* A monitor's spec-level options, only those set. */}}
{{- define "vllm-profile-exporter.monitorSpec" -}}
{{- $m := . -}}
{{- with $m.jobLabel }}
jobLabel: {{ . }}
{{- end }}
{{- range $key := list "sampleLimit" "targetLimit" "labelLimit" "labelNameLengthLimit" "labelValueLengthLimit" }}
{{- with index $m $key }}
{{ $key }}: {{ . }}
{{- end }}
{{- end }}
{{- with $m.attachMetadata }}
attachMetadata:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A monitor endpoint's options, only those set. */}}
{{- define "vllm-profile-exporter.monitorEndpoint" -}}
{{- if .honorLabels }}
honorLabels: true
{{- end }}
{{- with .proxyUrl }}
proxyUrl: {{ . | quote }}
{{- end }}
{{- end -}}
