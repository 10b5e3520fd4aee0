# Images of the Order Management System, one target per process, built from the repository root
# (one uv workspace and lock file). Each image installs only its own workspace member and the
# shared library `oms`, with exactly the dependencies uv.lock pins for that member:
#   docker build --target api --tag oms-api:dev .           # or consumer, worker, operator
#   docker build --target api-dev --tag oms-api:dev .       # what Tilt builds (live update)
# `make images` builds the four production targets (scripts/images.py: engine, base, tags).
#
# Works with the classic builder as well as BuildKit (no `RUN --mount`, no `# syntax=` line: both
# need buildx or a frontend image from a registry). The classic builder builds every stage above
# its target, so each service's stages sit together and the production target comes last.
#
# PYTHON_IMAGE: any Debian-based image with Python 3.11 as `python`/`python3.11` on PATH, venv
# and a CA bundle: python:3.11-slim, or the bookworm base scripts/images.py makes when no
# registry is reachable.
ARG PYTHON_IMAGE=python:3.11-slim

# --- builder-base: uv (pinned, from PyPI: no other registry needed) and the workspace's metadata -
FROM ${PYTHON_IMAGE} AS builder-base
# Every stage carries the full label set (hadolint DL3049 checks each stage a later one starts
# from); the production targets set their own title, description, version and revision last, so a
# new commit re-labels the images without rebuilding a layer.
LABEL org.opencontainers.image.title="oms-builder" \
      org.opencontainers.image.description="Build stage of the Order Management System images" \
      org.opencontainers.image.source="https://github.com/oms-project/order-management-system" \
      org.opencontainers.image.version="unreleased" \
      org.opencontainers.image.revision="unknown" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="Order Management System contributors"
ARG UV_VERSION=0.13.9
# An extra CA (PEM) for TLS-intercepting proxies, appended to the base's bundle; empty: none.
# Only the builder stages see it; the images ship the base's bundle unchanged.
ARG EXTRA_CA_CERTS=""
ENV SSL_CERT_FILE=/opt/uv/ca.pem \
    PIP_CERT=/opt/uv/ca.pem \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN python -m venv /opt/uv \
    && cat /etc/ssl/certs/ca-certificates.crt > /opt/uv/ca.pem \
    && printf '%s\n' "${EXTRA_CA_CERTS}" >> /opt/uv/ca.pem \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}" \
    && ln -s /opt/uv/bin/uv /usr/local/bin/uv
WORKDIR /build
# uv reads every member's pyproject.toml to know the workspace; the sources come per service.
COPY uv.lock pyproject.toml ./
COPY src/pyproject.toml src/
COPY services/api/pyproject.toml services/api/
COPY services/consumer/pyproject.toml services/consumer/
COPY services/worker/pyproject.toml services/worker/
COPY operator/pyproject.toml operator/

# --- runtime-base: what every image shares (no uv, no compilers, no sources) ---------------------
FROM ${PYTHON_IMAGE} AS runtime-base
LABEL org.opencontainers.image.title="oms" \
      org.opencontainers.image.description="Order Management System" \
      org.opencontainers.image.source="https://github.com/oms-project/order-management-system" \
      org.opencontainers.image.version="unreleased" \
      org.opencontainers.image.revision="unknown" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="Order Management System contributors"
RUN groupadd --system --gid 10001 oms \
    && useradd --system --uid 10001 --gid oms --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin oms \
    && install --directory --owner=10001 --group=10001 --mode=0750 /var/lib/oms
# Bytecode is compiled at build time: the root filesystem is read-only at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/var/lib/oms
# An empty working directory: Settings also reads `.env` from the cwd, and there is none here.
WORKDIR /app
USER 10001:10001
STOPSIGNAL SIGTERM

# Per service: <service>-builder installs the locked dependencies (a layer that changes only with
# uv.lock and the pyproject files), then the member and `oms` from their sources as wheels
# (--no-editable: the image needs no sources; UV_NO_CACHE: always built from the sources copied
# here, never a cached wheel of an older build). <service>-dev (Tilt) has the venv owned by the
# app user so live update can sync into it and restarts the process with watchfiles on a change;
# <service> is the production image, the venv root-owned so the process cannot rewrite its code.
# The HEALTHCHECK probes the port the process is told to listen on, not a fixed one.

# --- oms-api: REST API (FastAPI on uvicorn); uvicorn drains in-flight requests on SIGTERM -------
FROM builder-base AS api-builder
RUN uv sync --frozen --no-dev --package oms-api --no-install-workspace
COPY src/oms src/oms
COPY services/api/oms_api services/api/oms_api
RUN uv sync --frozen --no-dev --package oms-api --no-editable

FROM runtime-base AS api-runtime
COPY --from=api-builder /opt/venv /opt/venv
ENV HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r; sys.exit(r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2).status != 200)"]
CMD ["oms-api"]

FROM api-runtime AS api-dev
COPY --from=api-builder --chown=10001:10001 /opt/venv /opt/venv
CMD ["watchfiles", "--filter", "python", "oms-api", "/opt/venv/lib/python3.11/site-packages/oms", "/opt/venv/lib/python3.11/site-packages/oms_api"]

FROM api-runtime AS api
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="oms-api" \
      org.opencontainers.image.description="Order Management System REST API (FastAPI on uvicorn)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# --- oms-consumer: RabbitMQ consumer; on SIGTERM stops consuming, settles what it holds ---------
FROM builder-base AS consumer-builder
RUN uv sync --frozen --no-dev --package oms-consumer --no-install-workspace
COPY src/oms src/oms
COPY services/consumer/oms_consumer services/consumer/oms_consumer
RUN uv sync --frozen --no-dev --package oms-consumer --no-editable

FROM runtime-base AS consumer-runtime
COPY --from=consumer-builder /opt/venv /opt/venv
ENV HOST=0.0.0.0 \
    CONSUMER_METRICS_PORT=9101
EXPOSE 9101
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r; sys.exit(r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CONSUMER_METRICS_PORT', '9101'), timeout=2).status != 200)"]
CMD ["oms-consumer"]

FROM consumer-runtime AS consumer-dev
COPY --from=consumer-builder --chown=10001:10001 /opt/venv /opt/venv
CMD ["watchfiles", "--filter", "python", "oms-consumer", "/opt/venv/lib/python3.11/site-packages/oms", "/opt/venv/lib/python3.11/site-packages/oms_consumer"]

FROM consumer-runtime AS consumer
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="oms-consumer" \
      org.opencontainers.image.description="Order Management System RabbitMQ consumer (aio-pika)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# --- oms-worker: Celery worker; SIGTERM is Celery's warm shutdown (running tasks finish) --------
FROM builder-base AS worker-builder
RUN uv sync --frozen --no-dev --package oms-worker --no-install-workspace
COPY src/oms src/oms
COPY services/worker/oms_worker services/worker/oms_worker
RUN uv sync --frozen --no-dev --package oms-worker --no-editable

# Prometheus multiprocess files go to a fresh directory under /tmp (an emptyDir in the chart).
FROM runtime-base AS worker-runtime
COPY --from=worker-builder /opt/venv /opt/venv
ENV HOST=0.0.0.0 \
    WORKER_METRICS_PORT=9102
EXPOSE 9102
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r; sys.exit(r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('WORKER_METRICS_PORT', '9102'), timeout=2).status != 200)"]
CMD ["oms-worker"]

FROM worker-runtime AS worker-dev
COPY --from=worker-builder --chown=10001:10001 /opt/venv /opt/venv
CMD ["watchfiles", "--filter", "python", "oms-worker", "/opt/venv/lib/python3.11/site-packages/oms", "/opt/venv/lib/python3.11/site-packages/oms_worker"]

FROM worker-runtime AS worker
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="oms-worker" \
      org.opencontainers.image.description="Order Management System Celery worker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# --- oms-operator: Kopf operator; on SIGTERM stops the watches, lets running handlers finish ----
FROM builder-base AS operator-builder
RUN uv sync --frozen --no-dev --package oms-operator --no-install-workspace
COPY src/oms src/oms
COPY operator/oms_operator operator/oms_operator
RUN uv sync --frozen --no-dev --package oms-operator --no-editable

FROM runtime-base AS operator-runtime
COPY --from=operator-builder /opt/venv /opt/venv
EXPOSE 9103 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r; sys.exit(r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OPERATOR_LIVENESS_PORT', '8080'), timeout=2).status != 200)"]
CMD ["oms-operator"]

FROM operator-runtime AS operator-dev
COPY --from=operator-builder --chown=10001:10001 /opt/venv /opt/venv
CMD ["watchfiles", "--filter", "python", "oms-operator", "/opt/venv/lib/python3.11/site-packages/oms", "/opt/venv/lib/python3.11/site-packages/oms_operator"]

FROM operator-runtime AS operator
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="oms-operator" \
      org.opencontainers.image.description="Order Management System Kubernetes operator (Kopf)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
