{{/* The image both workloads run: repository:tag, the tag defaulting to v<appVersion>. */}}
{{- define "herald.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default (printf "v%s" .Chart.AppVersion) }}
{{- end }}

{{/* Container fields shared by the controller and the speaker: image and pull policy. */}}
{{- define "herald.containerImage" -}}
image: {{ include "herald.image" . }}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}

{{/* Pod fields shared by the controller and the speaker: pull secrets. */}}
{{- define "herald.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The membership key Secret's name: the user's, or the one the chart makes. */}}
{{- define "herald.memberlistSecret" -}}
{{ .Values.memberlist.existingSecret | default "herald-memberlist" }}
{{- end }}

{{/*
A component's extraArgs (non-empty) as YAML list items. The flags the chart sets itself, or that its RBAC
depends on, are refused with the value to use instead. Called with (list "speaker" .Values.speaker.extraArgs).
*/}}
{{- define "herald.extraArgs" -}}
{{- $component := index . 0 }}
{{- $args := index . 1 }}
{{- $managed := dict
  "--metrics-addr" (printf "set %s.metricsPort" $component)
  "--secret-name" "set memberlist.existingSecret"
  "--secret-namespace" "the Secret is read in the release's namespace, where the chart grants access"
  "--lease-namespace" "the Lease is kept in the release's namespace, where the chart grants access"
  "--witness-lease" "the chart grants access to the Lease herald-speaker-witness only" }}
{{- range $args }}
{{- $flag := regexReplaceAll "=.*$" . "" }}
{{- if hasKey $managed $flag }}
{{- fail (printf "%s.extraArgs: %s is managed by the chart: %s" $component $flag (get $managed $flag)) }}
{{- end }}
{{- end }}
{{- toYaml $args }}
{{- end }}
