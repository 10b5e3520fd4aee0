# The Kopf operator for OrderSystem resources (docs/operator.md). Its tests run in `make pytest`;
# these targets are shortcuts for working on it.

.PHONY: operator-run
operator-run: install ## run the operator against the current kubeconfig (all namespaces unless OPERATOR_NAMESPACES)
	$(RUN) oms-operator

.PHONY: operator-test
operator-test: install services ## only the operator's tests (pure functions, CRD, kmock end-to-end on real RabbitMQ)
	$(RUN) pytest tests/operator $(PYTEST_ARGS)
