# Container images: one multi-target Dockerfile at the repository root (targets api, consumer,
# worker, operator; <service>-dev for Tilt), built by scripts/images.py, which starts a Docker
# engine when none answers (root on Debian/Ubuntu: installs docker.io if missing) and builds a
# local Debian bookworm base when the engine lacks $(PYTHON_IMAGE) (IMAGE_PULL=1: pull it first,
# the only step that would reach a registry). Also the development-only
# backing services of deploy/dev (PostgreSQL, Redis, RabbitMQ from Debian packages, as
# oms-dev-<name>:bookworm) for Tilt and the end-to-end tests. See docs/kubernetes.md.
#
# The defaults give the names the chart's default values use: ghcr.io/oms-project/oms-<service>
# at the project's version (the chart's appVersion). For a cluster fed by `kind load` or Tilt:
# `make images IMAGE_REGISTRY= IMAGE_TAG=dev` gives oms-<service>:dev.
IMAGE_REGISTRY ?= ghcr.io/oms-project
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
PYTHON_IMAGE ?= python:3.11-slim
# An extra CA bundle for builds behind a TLS-intercepting proxy; only the certificates the base
# image lacks go into the build. Off when empty; follows the host's SSL_CERT_FILE when that is set.
IMAGE_CA_FILE ?= $(SSL_CERT_FILE)
IMAGES := $(RUN) python scripts/images.py
SERVICE_IMAGES := $(foreach s,api consumer worker operator,$(if $(IMAGE_REGISTRY),$(IMAGE_REGISTRY)/)oms-$(s):$(IMAGE_TAG))
BACKING_IMAGES := $(foreach s,postgresql redis rabbitmq,oms-dev-$(s):bookworm)

.PHONY: images
images: install ## build the four images, and dev PostgreSQL/Redis/RabbitMQ (starts a Docker engine if needed)
	$(IMAGES) build --registry "$(IMAGE_REGISTRY)" --tag "$(IMAGE_TAG)" --base "$(PYTHON_IMAGE)" \
		$(if $(IMAGE_CA_FILE),--ca-file "$(IMAGE_CA_FILE)")
	$(IMAGES) backing

# Type-checked by `make typecheck`.
TYPED_SCRIPTS += scripts/images.py scripts/progress.py
