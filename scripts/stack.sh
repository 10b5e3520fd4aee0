#!/usr/bin/env bash
# `make stack`: API, consumer and worker as three processes against the local PostgreSQL, Redis
# and RabbitMQ. Settings come as for every process: the environment first, then .env; the
# defaults below fill only what neither sets, so a .env made from .env.example is used as it is.
# Ctrl-C (or SIGTERM) stops all three gracefully.
#   scripts/stack.sh --print-env   # the settings it would run with, and where each comes from
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_FILE=.env
UV=${UV:-uv}

# The file's values exactly as the processes will read them (python-dotenv, under
# pydantic-settings: quotes, inline comments, `export`), for this script's own decisions.
declare -A FROM_FILE=()
if [ -f "$ENV_FILE" ]; then
  python=(.venv/bin/python)
  [ -x .venv/bin/python ] || python=("$UV" run --frozen python)
  [ -n "${PYTHON:-}" ] && python=("$PYTHON")
  values=$(mktemp)
  "${python[@]}" -c '
import sys
from dotenv import dotenv_values
for name, value in dotenv_values(sys.argv[1]).items():
    sys.stdout.write(name + "\0" + (value or "") + "\0")
' "$ENV_FILE" >"$values"
  while IFS= read -r -d '' name && IFS= read -r -d '' value; do
    FROM_FILE[$name]=$value
  done <"$values"
  rm -f "$values"
fi

setting() {  # NAME -> its value as the processes will see it (environment, then .env), or empty
  if [ -n "${!1+x}" ]; then printf '%s' "${!1}"; else printf '%s' "${FROM_FILE[$1]-}"; fi
}
SOURCES=()
default() {  # NAME VALUE: export VALUE only when neither the environment nor the file sets NAME
  if [ -n "${!1+x}" ]; then SOURCES+=("$1 environment")
  elif [ -n "${FROM_FILE[$1]+x}" ]; then SOURCES+=("$1 $ENV_FILE")
  else export "$1=$2"; SOURCES+=("$1 default")
  fi
}

default POSTGRES_HOST 127.0.0.1
default POSTGRES_PORT 5432
default POSTGRES_DB order_db
default POSTGRES_USER postgres
default REDIS_URL redis://127.0.0.1:6379/0
default REDIS_URL_RATE_LIMIT redis://127.0.0.1:6379/1
default REDIS_URL_CELERY redis://127.0.0.1:6379/2
default RABBITMQ_URL amqp://guest:guest@127.0.0.1:5672/
default PORT 8000
default CONSUMER_METRICS_PORT 9101
default WORKER_METRICS_PORT 9102
: "${STACK_LOG_DIR:=data/stack}"

# Outside the embedded mode the API never makes up a signing key: give the stack one of its own
# unless the environment or the file names one.
if [ -z "$(setting JWT_PRIVATE_KEY)" ]; then
  default JWT_PRIVATE_KEY_PATH data/stack/jwt/private.pem
fi

if [ "${1:-}" = "--print-env" ]; then
  for entry in "${SOURCES[@]}"; do
    name=${entry%% *}
    printf '%s=%s\t(%s)\n' "$name" "$(setting "$name")" "${entry#* }"
  done
  exit 0
fi

RUN=("$UV" run --frozen)
mkdir -p "$STACK_LOG_DIR"

PGHOST=$(setting POSTGRES_HOST) PGPORT=$(setting POSTGRES_PORT) PGUSER=$(setting POSTGRES_USER)
DATABASE=$(setting POSTGRES_DB)
if command -v psql >/dev/null && [ -z "$(setting DATABASE_URL)" ]; then
  export PGHOST PGPORT PGUSER
  PGPASSWORD=$(setting POSTGRES_PASSWORD) && export PGPASSWORD
  exists=$(psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")
  if [ "$exists" != "1" ]; then
    echo "creating database $DATABASE"
    psql -d postgres -qc "CREATE DATABASE \"$DATABASE\""
  fi
fi
"${RUN[@]}" oms migrate

key=$(setting JWT_PRIVATE_KEY_PATH)
if [ -n "$key" ] && [ ! -f "$key" ] && [ -z "$(setting JWT_PRIVATE_KEY)" ]; then
  "${RUN[@]}" oms generate-keys --out "$key"
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
  API            http://127.0.0.1:$(setting PORT)        (docs at /docs)
  consumer       http://127.0.0.1:$(setting CONSUMER_METRICS_PORT)/health/ready  /metrics
  worker         http://127.0.0.1:$(setting WORKER_METRICS_PORT)/health/ready  /metrics
Ctrl-C stops everything.
INFO
# Ends when any service exits (then stops the others) or on Ctrl-C.
wait -n "${pids[@]}" || true
stop
