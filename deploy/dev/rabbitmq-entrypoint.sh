#!/bin/sh
# Configure RabbitMQ from the environment, as the official image does for the variables deploy/dev
# uses (RABBITMQ_DEFAULT_USER, RABBITMQ_DEFAULT_PASS), then run the broker in the foreground.
set -eu
: "${RABBITMQ_DEFAULT_USER:=guest}"
: "${RABBITMQ_DEFAULT_PASS:=guest}"
cat > "$RABBITMQ_CONFIG_FILE" <<CONF
default_user = $RABBITMQ_DEFAULT_USER
default_pass = $RABBITMQ_DEFAULT_PASS
loopback_users = none
listeners.tcp.default = 5672
management.tcp.port = 15672
log.console = true
log.console.level = info
log.file = false
CONF
echo '[rabbitmq_management].' > "$RABBITMQ_ENABLED_PLUGINS_FILE"
exec /usr/lib/rabbitmq/bin/rabbitmq-server
