#!/usr/bin/env bash
# `make services`: PostgreSQL, Redis and RabbitMQ answering on 127.0.0.1, as the tests, `make stack`
# and `make bench` expect them. Installs what is missing (Debian/Ubuntu, as root), configures it
# for local development, starts the daemons directly (no systemd needed) and waits until each
# answers. With everything up it only checks, in well under two seconds.
#
#   PostgreSQL  127.0.0.1:5432  role `postgres`, no password from loopback (trust)
#   Redis       127.0.0.1:6379  persistence off
#   RabbitMQ    127.0.0.1:5672  guest/guest (loopback only: RabbitMQ's default),
#               management API on 127.0.0.1:15672
#
# Anywhere else (not root, not Debian/Ubuntu) it installs nothing: it prints the commands to run
# and exits non-zero. OMS_SERVICES_{POSTGRES,REDIS,AMQP,MANAGEMENT}_PORT move the ports.
set -euo pipefail

PG_PORT=${OMS_SERVICES_POSTGRES_PORT:-5432}
REDIS_PORT=${OMS_SERVICES_REDIS_PORT:-6379}
AMQP_PORT=${OMS_SERVICES_AMQP_PORT:-5672}
MANAGEMENT_PORT=${OMS_SERVICES_MANAGEMENT_PORT:-15672}
MARKER="managed by order-management-system scripts/ensure-services.sh"
LOG_DIR=/var/log/oms-services

say() { printf '  %s\n' "$*"; }
die() { printf 'services: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# What the tests need, not merely an open port: a password-less login as `postgres`.
postgres_up() {
  command -v psql >/dev/null &&
    PGCONNECT_TIMEOUT=2 psql -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' \
      >/dev/null 2>&1
}
redis_up() { command -v redis-cli >/dev/null && [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
rabbit_up() { port_open "$AMQP_PORT" && port_open "$MANAGEMENT_PORT"; }

all_up() { postgres_up && redis_up && rabbit_up; }

report() {
  local name=$1 check=$2 where=$3
  if "$check"; then say "$name: up ($where)"; else say "$name: DOWN ($where)"; return 1; fi
}

wait_for() {  # name, seconds, check
  local name=$1 seconds=$2 check=$3 deadline=$((SECONDS + $2))
  until "$check"; do
    if ((SECONDS >= deadline)); then
      die "$name did not answer within ${seconds}s (logs: $LOG_DIR, /var/log/postgresql, /var/log/rabbitmq)"
    fi
    sleep 0.5
  done
}

print_manual_steps() {
  cat >&2 <<'EOF'
services: PostgreSQL, Redis and RabbitMQ are needed on 127.0.0.1 and could not be installed here
(this script installs them only as root on Debian/Ubuntu). Install and start them yourself:

  Debian/Ubuntu (as root or with sudo):
    apt-get update
    apt-get install -y postgresql redis-server rabbitmq-server
    rabbitmq-plugins enable rabbitmq_management
    # let `postgres` log in from loopback without a password: put these first in pg_hba.conf
    #   host all all 127.0.0.1/32 trust
    #   host all all ::1/128      trust
    # then start the three (service ... start, or run this script as root)

  macOS (Homebrew):
    brew install postgresql@15 redis rabbitmq
    brew services start postgresql@15 && brew services start redis && brew services start rabbitmq
    createuser -s postgres                       # Homebrew's superuser is your login name
    rabbitmq-plugins enable rabbitmq_management

Then run `make services` again. `make run` needs none of this (embedded SQLite default).
EOF
  exit 1
}

can_install() { [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; }

# Package scripts must not try to start daemons (no systemd, and we start them ourselves):
# policy-rc.d's exit code 101 tells invoke-rc.d "not allowed".
apt_install() {
  local policy=/usr/sbin/policy-rc.d added=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && added=1
  fi
  say "installing with apt-get: $*"
  local started=$SECONDS status=0
  apt-get update -qq || status=$?
  if [ "$status" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
      >"$LOG_DIR/apt.log" 2>&1 || status=$?
  fi
  [ -n "$added" ] && rm -f "$policy"
  [ "$status" = 0 ] || die "apt-get install $* failed (see $LOG_DIR/apt.log)"
  say "installed in $((SECONDS - started))s"
}

postgres_version() {  # newest installed server major version
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] && basename "$(dirname "$(dirname "$bin")")"
}

setup_postgres() {
  local version conf hba
  version=$(postgres_version) || die "PostgreSQL server binaries not found after install"
  if ! pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
    say "creating PostgreSQL $version cluster main"
    pg_createcluster "$version" main --port "$PG_PORT" >/dev/null
  fi
  conf=/etc/postgresql/$version/main
  hba=$conf/pg_hba.conf
  mkdir -p "$conf/conf.d"
  cat >"$conf/conf.d/90-oms.conf" <<EOF
# $MARKER
listen_addresses = '127.0.0.1'
port = $PG_PORT
max_connections = 300
EOF
  if ! grep -q "$MARKER" "$hba"; then
    # First match wins in pg_hba.conf, so the trust lines go on top.
    {
      printf '# %s: loopback logins without a password (development and tests only)\n' "$MARKER"
      printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
      cat "$hba"
    } >"$hba.new"
    chown --reference="$hba" "$hba.new" && chmod --reference="$hba" "$hba.new"
    mv "$hba.new" "$hba"
  fi
  mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql
  if pg_ctlcluster "$version" main status >/dev/null 2>&1; then
    pg_ctlcluster "$version" main reload
  else
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
}

start_redis() {
  say "starting Redis"
  mkdir -p /var/lib/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile "$LOG_DIR/redis.log"
}

write_managed() {  # path: stdin becomes the file, unless someone else's file is there
  local path=$1 content
  content=$(cat)
  if [ -e "$path" ] && ! grep -qs "$MARKER" "$path"; then
    say "keeping $path (not ours); make sure it matches what the tests expect"
    return 0
  fi
  printf '%s\n' "$content" >"$path"
}

setup_rabbitmq() {
  if port_open "$AMQP_PORT"; then  # running, but without the management API
    say "enabling RabbitMQ's management plugin"
    rabbitmq-plugins enable rabbitmq_management >/dev/null
    return 0
  fi
  mkdir -p /etc/rabbitmq
  write_managed /etc/rabbitmq/rabbitmq.conf <<EOF
# $MARKER
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MANAGEMENT_PORT
# the Erlang distribution port (rabbitmqctl talks to the node through it) on loopback too
distribution.listener.interface = 127.0.0.1
EOF
  if ! grep -qs rabbitmq_management /etc/rabbitmq/enabled_plugins; then
    rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
  fi
  say "starting RabbitMQ"
  # epmd, which the node starts, reads its bind address from the environment.
  ERL_EPMD_ADDRESS=127.0.0.1 setsid nohup rabbitmq-server >>"$LOG_DIR/rabbitmq.log" 2>&1 </dev/null &
}

main() {
  echo "checking local services"
  if all_up; then
    report postgres postgres_up "127.0.0.1:$PG_PORT"
    report redis redis_up "127.0.0.1:$REDIS_PORT"
    report rabbitmq rabbit_up "127.0.0.1:$AMQP_PORT, management :$MANAGEMENT_PORT"
    return 0
  fi
  can_install || {
    report postgres postgres_up "127.0.0.1:$PG_PORT" || true
    report redis redis_up "127.0.0.1:$REDIS_PORT" || true
    report rabbitmq rabbit_up "127.0.0.1:$AMQP_PORT, management :$MANAGEMENT_PORT" || true
    print_manual_steps
  }
  mkdir -p "$LOG_DIR"

  local missing=()
  postgres_version >/dev/null || missing+=(postgresql)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"

  # Start everything first, then wait: RabbitMQ's boot overlaps PostgreSQL's and Redis's.
  postgres_up || setup_postgres
  redis_up || start_redis
  rabbit_up || setup_rabbitmq

  wait_for postgres 60 postgres_up
  say "postgres: up (127.0.0.1:$PG_PORT)"
  wait_for redis 30 redis_up
  say "redis: up (127.0.0.1:$REDIS_PORT)"
  wait_for rabbitmq 120 rabbit_up
  say "rabbitmq: up (127.0.0.1:$AMQP_PORT, management :$MANAGEMENT_PORT)"
}

main "$@"
