{{/* Names and labels of every object in the chart. */}}

{{- define "recon-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already holds the chart name; 63 characters at most. */}}
{{- define "recon-operator.fullname" -}}
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

{{- define "recon-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "recon-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recon-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "recon-operator.labels" -}}
helm.sh/chart: {{ include "recon-operator.chart" . }}
{{ include "recon-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: recon-operator
{{- end }}

{{- define "recon-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "recon-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is set (it pins the image; the tag is ignored), else repository:tag. */}}
{{- define "recon-operator.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "recon-operator.image" -}}
{{- include "recon-operator.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{- define "recon-operator.workerImage" -}}
{{- include "recon-operator.imageRef" (dict "image" .Values.worker.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{/* The ConfigMap of worker defaults the operator reads (envFrom). */}}
{{- define "recon-operator.configName" -}}
{{- printf "%s-worker-defaults" (include "recon-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
