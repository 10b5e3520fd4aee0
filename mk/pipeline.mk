# The order pipeline: `make stack` runs API, consumer and worker as separate processes against
# the local PostgreSQL, Redis and RabbitMQ (see docs/pipeline.md). Its tests (tests/pipeline,
# tests/e2e) run inside `make pytest`; `make test-pipeline` runs only them.

.PHONY: stack
stack: install services ## start API + consumer + worker against local PostgreSQL/Redis/RabbitMQ
	UV=$(UV) ./scripts/stack.sh

.PHONY: test-pipeline
test-pipeline: install services ## only the pipeline integration and end-to-end tests
	$(RUN) pytest tests/pipeline tests/e2e $(PYTEST_ARGS)
