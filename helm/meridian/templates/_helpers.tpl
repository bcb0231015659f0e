{{/*
The chart's name (the `nameOverride` value, else "meridian"), cut to the
63 characters a label value allows.
*/}}
{{- define "meridian.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: `fullnameOverride`, else the release
name (one release per region, e.g. "meridian" in namespace
meridian-eu-west). Cut to 40 characters so that "<fullname>-origin-workers-headless"
stays within 63.
*/}}
{{- define "meridian.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Labels on every object: name, instance, version, chart, region, and who
manages it.
*/}}
{{- define "meridian.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "meridian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: meridian
meridian.dev/region: {{ .Values.region.name }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "root" $ "component"
"edge") or (dict "root" $ "component" "origin" "role" "api"): an origin
role's pods carry `meridian.dev/role` too.
*/}}
{{- define "meridian.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meridian.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .role }}
meridian.dev/role: {{ .role }}
{{- end }}
{{- end }}

{{/*
The image reference: repository and tag (default: the chart's appVersion),
or repository@digest when a digest is set.
*/}}
{{- define "meridian.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount's name.
*/}}
{{- define "meridian.serviceAccountName" -}}
{{- default (include "meridian.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
Seconds a stopping pod needs, from the kubelet's preStop through the
binary's drain to the last in-flight request: preStop sleep + drain delay +
in-flight grace + 5 s of margin. terminationGracePeriodSeconds is this, so
the kubelet never kills a pod that is still draining. Call with a
component's `drain` values.
*/}}
{{- define "meridian.terminationSeconds" -}}
{{- add .preStopSeconds .delaySeconds .inflightSeconds 5 }}
{{- end }}

{{/*
The pod and container security settings every Meridian container runs
with: non-root (the image's uid 65532), read-only root filesystem, no
privilege escalation, no capabilities, the runtime's default seccomp
profile.
*/}}
{{- define "meridian.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "meridian.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Spread a component's pods across zones (and across nodes): call with
(dict "root" $ "component" … "role" …).
*/}}
{{- define "meridian.topologySpread" -}}
{{- $selector := include "meridian.selectorLabels" . }}
{{- range .root.Values.topologySpread }}
- maxSkew: {{ .maxSkew }}
  topologyKey: {{ .topologyKey }}
  whenUnsatisfiable: {{ .whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- $selector | nindent 6 }}
{{- end }}
{{- end }}

{{/*
Where the region's Secret (`secrets.existingSecret`) is mounted; each key
is a file the configs name with `<field>_file`.
*/}}
{{- define "meridian.secretsDir" -}}
/etc/meridian/secrets
{{- end }}
