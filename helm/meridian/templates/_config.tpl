{{/*
The `telemetry` section both configs share: JSON log lines, the sampling
ratio, and the OTLP endpoint when one is set (traces are off without).
*/}}
{{- define "meridian.telemetry" -}}
{{- $telemetry := dict "log_format" "json" "sample_ratio" .Values.telemetry.sampleRatio }}
{{- with .Values.telemetry.otlpEndpoint }}
{{- $_ := set $telemetry "otlp_endpoint" . }}
{{- end }}
{{- $telemetry | mustToJson }}
{{- end }}

{{/*
The edge's config (edge/src/config.rs), as JSON: the keys the chart owns
(listeners, region, upstreams, secrets as `<field>_file`, the drain,
`telemetry`'s log format, sampling and endpoint),
merged over `edge.config`. The binary validates it at start and the tests
run `meridian edge --check-config` on it.
*/}}
{{- define "meridian.edgeConfig" -}}
{{- $v := .Values }}
{{- $secrets := include "meridian.secretsDir" . }}
{{- $upstreams := list (dict
    "name" $v.region.name
    "origins" (list (printf "%s-origin-api-headless.%s.svc:8080" (include "meridian.fullname" .) .Release.Namespace))
    "latency_ms" 0
    "countries" $v.region.countries
    "latency_ms_to" $v.region.latencyMs) }}
{{- range $v.region.peers }}
{{- $upstreams = append $upstreams (dict
    "name" .name
    "origins" (list .origin)
    "latency_ms" (get $v.region.latencyMs .name | default 0)
    "countries" .countries
    "latency_ms_to" .latencyMsTo) }}
{{- end }}
{{- $owned := dict
    "region" $v.region.name
    "listen" "0.0.0.0:8000"
    "admin_listen" "0.0.0.0:9000"
    "admin_tokens" (list (dict "name" "ops" "token_file" (printf "%s/%s" $secrets $v.secrets.keys.edgeAdminToken)))
    "upstreams" $upstreams
    "redis_url_file" (printf "%s/%s" $secrets $v.secrets.keys.redisUrl)
    "identity" (dict "hs256_secret_file" (printf "%s/%s" $secrets $v.secrets.keys.shopperTokenSecret))
    "modes" (dict "state_path" "/var/lib/meridian/edge-modes.json")
    "drain_delay" (printf "%ds" (int $v.edge.drain.delaySeconds))
    "grace_period_seconds" (int $v.edge.drain.inflightSeconds)
    "telemetry" (include "meridian.telemetry" . | fromJson) }}
{{- if $v.edge.tls.enabled }}
{{- $_ := set $owned "tls" (dict "listen" "0.0.0.0:8443" "cert" "/etc/meridian/tls/tls.crt" "key" "/etc/meridian/tls/tls.key") }}
{{- end }}
{{- if or $v.edge.geo.trustedHeader $v.edge.geo.trustedRanges }}
{{- $_ := set $owned "geo" (dict "trusted_header" $v.edge.geo.trustedHeader "trusted_ranges" $v.edge.geo.trustedRanges) }}
{{- end }}
{{- if $v.edge.waitingRoom }}
{{- $_ := set $owned "waiting_room" (dict "secret_file" (printf "%s/%s" $secrets $v.secrets.keys.waitingRoomSecret)) }}
{{- end }}
{{- if $v.edge.bots }}
{{- $_ := set $owned "bots" (dict "challenge_secret_file" (printf "%s/%s" $secrets $v.secrets.keys.botChallengeSecret)) }}
{{- end }}
{{- mustMergeOverwrite (deepCopy $v.edge.config) $owned | mustToPrettyJson }}
{{- end }}

{{/*
One origin role's config (origin/src/config.rs), as JSON: the keys the
chart owns merged over `origin.config`. Call with (dict "root" $ "role"
"api").
*/}}
{{- define "meridian.originConfig" -}}
{{- $v := .root.Values }}
{{- $secrets := include "meridian.secretsDir" .root }}
{{- $replicas := list }}
{{- range $v.catalog.replicas }}
{{- $replicas = append $replicas (dict "name" .name "url_file" (printf "%s/%s" $secrets .secretKey)) }}
{{- end }}
{{- $regions := list $v.region.name }}
{{- range $v.region.peers }}
{{- $regions = append $regions .name }}
{{- end }}
{{- $database := dict
    "primary_url_file" (printf "%s/%s" $secrets $v.secrets.keys.catalogPrimaryUrl)
    "replicas" $replicas
    "lag_tolerance" $v.region.replicaLagTolerance }}
{{- $owned := dict
    "region" $v.region.name
    "listen" "0.0.0.0:8080"
    "internal_listen" "0.0.0.0:8081"
    "drain_delay" (printf "%ds" (int $v.origin.drain.delaySeconds))
    "database" $database
    "redis_url_file" (printf "%s/%s" $secrets $v.secrets.keys.redisUrl)
    "admin_tokens" (list (dict "name" "ops" "token_file" (printf "%s/%s" $secrets $v.secrets.keys.originAdminToken)))
    "shoppers" (dict
        "hs256_secret_file" (printf "%s/%s" $secrets $v.secrets.keys.shopperTokenSecret)
        "guest_cookie_secret_file" (printf "%s/%s" $secrets $v.secrets.keys.guestCookieSecret))
    "modes" (dict "regions" $regions)
    "admin_api" (eq .role "admin")
    "background_workers" (eq .role "workers")
    "telemetry" (include "meridian.telemetry" .root | fromJson) }}
{{- if $v.orders.shards }}
{{- $shards := list }}
{{- range $v.orders.shards }}
{{- $ranges := list }}
{{- range .buckets }}
{{- $ranges = append $ranges (list (int (index . 0)) (int (index . 1))) }}
{{- end }}
{{- $shards = append $shards (dict "name" .name "url_file" (printf "%s/%s" $secrets .secretKey) "buckets" $ranges) }}
{{- end }}
{{- $_ := set $owned "orders" (dict "buckets" (int $v.orders.buckets) "shards" $shards) }}
{{- end }}
{{- if $v.payments.providers }}
{{- $_ := set $owned "payments" (dict "providers" $v.payments.providers) }}
{{- end }}
{{- mustMergeOverwrite (deepCopy $v.origin.config) $owned | mustToPrettyJson }}
{{- end }}
