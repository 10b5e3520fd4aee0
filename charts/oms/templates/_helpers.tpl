{{/* Names, labels and the pieces every workload shares. */}}

{{- define "oms.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oms.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component>. Call with (dict "root" $ "component" "api"). */}}
{{- define "oms.componentName" -}}
{{- printf "%s-%s" (include "oms.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oms.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oms.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oms.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "oms.labels" -}}
helm.sh/chart: {{ include "oms.chart" . }}
{{ include "oms.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: order-management-system
{{- end }}

{{/* Labels of one component. Call with (dict "root" $ "component" "api"). */}}
{{- define "oms.componentLabels" -}}
{{ include "oms.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "oms.componentSelectorLabels" -}}
{{ include "oms.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "oms.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "oms.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "oms.jwtSecretName" -}}
{{- default (printf "%s-jwt-keys" (include "oms.fullname" .)) .Values.jwt.existingSecret }}
{{- end }}

{{/* Image reference of a component. Call with (dict "root" $ "name" "oms-api"). */}}
{{- define "oms.image" -}}
{{- $image := .root.Values.image }}
{{- $tag := default .root.Chart.AppVersion $image.tag }}
{{- $repository := .name }}
{{- if $image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" $image.registry) .name }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s:%s@%s" $repository $tag $image.digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{/*
Non-secret settings as name: value pairs; the ConfigMap holds them, and the migration hook (which
runs before the ConfigMap exists) gets them inline.
*/}}
{{- define "oms.configData" -}}
{{- $c := .Values.config -}}
LOG_LEVEL: {{ $c.logLevel | quote }}
POSTGRES_HOST: {{ .Values.database.host | quote }}
POSTGRES_PORT: {{ .Values.database.port | quote }}
POSTGRES_DB: {{ .Values.database.name | quote }}
POSTGRES_USER: {{ .Values.database.user | quote }}
DB_POOL_SIZE: {{ .Values.database.poolSize | quote }}
DB_MAX_OVERFLOW: {{ .Values.database.maxOverflow | quote }}
{{- if not .Values.redis.existingSecret }}
REDIS_URL: {{ .Values.redis.url | quote }}
REDIS_URL_RATE_LIMIT: {{ .Values.redis.rateLimitUrl | quote }}
REDIS_URL_CELERY: {{ .Values.redis.celeryUrl | quote }}
{{- end }}
REDIS_KEY_PREFIX: {{ .Values.redis.keyPrefix | quote }}
ORDER_CACHE_TTL_SECONDS: {{ $c.orders.cacheTtlSeconds | quote }}
JWT_AUTO_GENERATE_KEYS: "false"
JWT_PRIVATE_KEY_PATH: {{ printf "%s/private.pem" .Values.jwt.mountPath | quote }}
JWT_JWKS_PATH: {{ printf "%s/jwks.json" .Values.jwt.mountPath | quote }}
JWT_KEY_RELOAD_SECONDS: {{ $c.tokens.keyReloadSeconds | quote }}
JWT_ISSUER: {{ $c.tokens.issuer | quote }}
JWT_AUDIENCE: {{ $c.tokens.audience | quote }}
JWT_ACCESS_TOKEN_EXPIRE_MINUTES: {{ $c.tokens.accessTokenExpireMinutes | quote }}
JWT_LEEWAY_SECONDS: {{ $c.tokens.leewaySeconds | quote }}
CORS_ORIGINS: {{ join "," $c.corsOrigins | quote }}
CORS_ALLOW_CREDENTIALS: {{ $c.corsAllowCredentials | quote }}
TRUSTED_PROXIES: {{ join "," $c.trustedProxies | quote }}
RATE_LIMIT_ENABLED: {{ $c.rateLimit.enabled | quote }}
RATE_LIMIT_CREATE_ORDER: {{ $c.rateLimit.createOrder | quote }}
RATE_LIMIT_GET_ORDER: {{ $c.rateLimit.getOrder | quote }}
RATE_LIMIT_UPDATE_ORDER: {{ $c.rateLimit.updateOrder | quote }}
RATE_LIMIT_LIST_ORDERS: {{ $c.rateLimit.listOrders | quote }}
RATE_LIMIT_TOKEN: {{ $c.rateLimit.token | quote }}
RATE_LIMIT_REGISTER: {{ $c.rateLimit.register | quote }}
RATE_LIMIT_LOGIN_FAILURES: {{ $c.rateLimit.loginFailures | quote }}
RATE_LIMIT_IPV6_PREFIX: {{ $c.rateLimit.ipv6Prefix | quote }}
HTTP_HEAD_TIMEOUT_SECONDS: {{ $c.http.headTimeoutSeconds | quote }}
HTTP_BODY_TIMEOUT_SECONDS: {{ $c.http.bodyTimeoutSeconds | quote }}
HTTP_KEEP_ALIVE_TIMEOUT_SECONDS: {{ $c.http.keepAliveTimeoutSeconds | quote }}
HTTP_MAX_CONNECTIONS: {{ $c.http.maxConnections | quote }}
IDEMPOTENCY_KEY_TTL_HOURS: {{ $c.orders.idempotencyKeyTtlHours | quote }}
ORDERS_PAGE_MAX: {{ $c.orders.pageMax | quote }}
ORDER_TASK_MAX_RETRIES: {{ $c.pipeline.taskMaxRetries | quote }}
ORDER_TASK_RETRY_DELAY_SECONDS: {{ $c.pipeline.taskRetryDelaySeconds | quote }}
OUTBOX_BATCH_SIZE: {{ $c.pipeline.outboxBatchSize | quote }}
OUTBOX_POLL_SECONDS: {{ $c.pipeline.outboxPollSeconds | quote }}
RUN_OUTBOX_RELAY: {{ $c.pipeline.runOutboxRelay | quote }}
{{- range $name, $value := $c.extraEnv }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Credentials, each from its existing Secret (never from values). */}}
{{- define "oms.secretEnv" -}}
{{- if .Values.database.existingSecret }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.passwordKey }}
{{- end }}
{{- with .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.redis.urlKey }}
- name: REDIS_URL_RATE_LIMIT
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.redis.rateLimitUrlKey }}
- name: REDIS_URL_CELERY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.redis.celeryUrlKey }}
{{- end }}
{{- with .Values.rabbitmq.existingSecret }}
- name: RABBITMQ_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.rabbitmq.urlKey }}
{{- end }}
{{- end }}

{{/* The writable emptyDirs every pod mounts (the root filesystem is read-only). */}}
{{- define "oms.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: data
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "oms.scratchVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/oms
{{- end }}

{{- define "oms.configChecksum" -}}
{{- include "oms.configData" . | sha256sum }}
{{- end }}

{{/* An HTTP probe. Call with (dict "path" "/health" "port" "http" "timing" .probes.liveness). */}}
{{- define "oms.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{ toYaml .timing }}
{{- end }}

{{/*
The Secrets the operator may read and patch (a YAML list): the JWT key Secret of this release's
OrderSystem, the RabbitMQ Secret(s) it reads the URLs from, and operator.rbac.extraSecretNames
(for OrderSystems created outside the chart).
*/}}
{{- define "oms.operatorSecretNames" -}}
{{- $names := list (include "oms.jwtSecretName" .) .Values.rabbitmq.existingSecret }}
{{- with .Values.orderSystem.managementUrlSecretRef.name }}
{{- $names = append $names . }}
{{- end }}
{{- with (dig "jwt" "secretName" "" .Values.orderSystem.spec) }}
{{- $names = append $names . }}
{{- end }}
{{- $names = concat $names .Values.operator.rbac.extraSecretNames }}
{{- toYaml ($names | uniq) }}
{{- end }}
