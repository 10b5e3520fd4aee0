#!/usr/bin/env bash
# Make sure the local PostgreSQL, Redis and RabbitMQ answer; start the ones that do not.
# Uses the start commands of this machine kind (see DEVELOPERS.md); waits until each answers.
set -euo pipefail

wait_for() {  # name, seconds, command...
  local name=$1 seconds=$2; shift 2
  for _ in $(seq "$seconds"); do
    if "$@" >/dev/null 2>&1; then echo "  $name: up"; return 0; fi
    sleep 1
  done
  echo "  $name: did not answer within ${seconds}s" >&2
  return 1
}

port_open() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1"; }

postgres_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }
rabbit_up() { port_open 5672; }

echo "checking local services"
if ! postgres_up; then
  echo "  starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
fi
if ! redis_up; then
  echo "  starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! rabbit_up; then
  echo "  starting RabbitMQ"
  rabbitmq-server -detached || true
fi
wait_for postgres 60 postgres_up
wait_for redis 30 redis_up
wait_for rabbitmq 120 rabbit_up
