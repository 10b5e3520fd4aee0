#!/usr/bin/env bash
# `make stack`: API, consumer and worker as three processes against the local PostgreSQL, Redis
# and RabbitMQ. Every setting can be overridden from the environment (or .env); the defaults
# below only fill what is unset. Ctrl-C (or SIGTERM) stops all three gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${POSTGRES_HOST:=127.0.0.1}"
: "${POSTGRES_PORT:=5432}"
: "${POSTGRES_DB:=order_db}"
: "${POSTGRES_USER:=postgres}"
: "${REDIS_URL:=redis://127.0.0.1:6379/0}"
: "${REDIS_URL_RATE_LIMIT:=redis://127.0.0.1:6379/1}"
: "${REDIS_URL_CELERY:=redis://127.0.0.1:6379/2}"
: "${RABBITMQ_URL:=amqp://guest:guest@127.0.0.1:5672/}"
: "${PORT:=8000}"
: "${CONSUMER_METRICS_PORT:=9101}"
: "${WORKER_METRICS_PORT:=9102}"
: "${STACK_LOG_DIR:=data/stack}"
export POSTGRES_HOST POSTGRES_PORT POSTGRES_DB POSTGRES_USER REDIS_URL REDIS_URL_RATE_LIMIT \
  REDIS_URL_CELERY RABBITMQ_URL PORT CONSUMER_METRICS_PORT WORKER_METRICS_PORT

UV=${UV:-uv}
RUN=("$UV" run --frozen)
mkdir -p "$STACK_LOG_DIR"

if command -v psql >/dev/null; then
  exists=$(psql -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$POSTGRES_DB'")
  if [ "$exists" != "1" ]; then
    echo "creating database $POSTGRES_DB"
    psql -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d postgres -qc \
      "CREATE DATABASE \"$POSTGRES_DB\""
  fi
fi
"${RUN[@]}" oms migrate

# Outside the embedded mode the API never makes up a signing key: give the stack one of its own.
if [ -z "${JWT_PRIVATE_KEY:-}" ] && [ -z "${JWT_PRIVATE_KEY_PATH:-}" ]; then
  JWT_PRIVATE_KEY_PATH=data/stack/jwt/private.pem
  [ -f "$JWT_PRIVATE_KEY_PATH" ] || "${RUN[@]}" oms generate-keys --out "$JWT_PRIVATE_KEY_PATH"
  export JWT_PRIVATE_KEY_PATH
fi

pids=()
stop() {
  trap - INT TERM
  echo "stopping the stack"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM

start() {  # name, command...
  local name=$1; shift
  "${RUN[@]}" "$@" >"$STACK_LOG_DIR/$name.log" 2>&1 &
  pids+=("$!")
  echo "  $name: pid $! (log $STACK_LOG_DIR/$name.log)"
}

echo "starting the stack"
start api oms-api
start consumer oms-consumer
start worker oms-worker
cat <<INFO
  API            http://127.0.0.1:$PORT        (docs at /docs)
  consumer       http://127.0.0.1:$CONSUMER_METRICS_PORT/health/ready  /metrics
  worker         http://127.0.0.1:$WORKER_METRICS_PORT/health/ready  /metrics
Ctrl-C stops everything.
INFO
# Ends when any service exits (then stops the others) or on Ctrl-C.
wait -n "${pids[@]}" || true
stop
