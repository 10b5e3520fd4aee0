# The order pipeline: `make stack` runs API, consumer and worker as separate processes against
# the local PostgreSQL, Redis and RabbitMQ (see docs/pipeline.md). Its tests (tests/pipeline,
# tests/e2e) run inside `make pytest`; `make pytest T="tests/pipeline tests/e2e"` runs only them.

.PHONY: stack
stack: install services ## start API + consumer + worker against local PostgreSQL/Redis/RabbitMQ
	UV=$(UV) ./scripts/stack.sh
