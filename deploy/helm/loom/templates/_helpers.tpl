{{/* The image of every Loom container. */}}
{{- define "loom.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* Labels of a Loom component: selector labels, plus part-of on the object. */}}
{{- define "loom.selector" -}}
app.kubernetes.io/name: loom
app.kubernetes.io/component: {{ . }}
{{- end }}

{{- define "loom.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end }}

{{- define "loom.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: [ALL]}
{{- end }}

{{/* Spread over nodes and zones; the argument is the selector labels (a YAML string). */}}
{{- define "loom.spread" -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
{{ . | indent 6 }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
{{ . | indent 6 }}
{{- end }}

{{/* OTLP export; the argument is a dict with root (.) and name (the service name). */}}
{{- define "loom.otel" -}}
{{- if .root.Values.otlpEndpoint }}
- {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ .root.Values.otlpEndpoint | quote }}}
- {name: OTEL_SERVICE_NAME, value: {{ .name }}}
{{- end }}
{{- end }}

{{/* Readiness, liveness and startup probes on a port name. */}}
{{- define "loom.probes" -}}
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 3
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 2
  failureThreshold: {{ .startup | default 60 }}
{{- end }}

{{/* The [bus] TLS lines of a service on an external NATS. */}}
{{- define "loom.natsTls" -}}
{{- if .Values.nats.tls }}
tls_ca = "/run/secrets/loom/nats-ca.pem"
require_tls = true
{{- end }}
{{- end }}
