# syntax=docker/dockerfile:1
# kube-stream-runner: `ksr run` (runner, gunicorn probes, RQ callback worker) as a non-root,
# read-only-root container. docs/deploy.md explains the choices.
#
#   docker build -t kube-stream-runner:0.1.0 .
#
# The chart mounts emptyDirs on /run/ksr (status board, prometheus_client multiprocess
# files) and /tmp; the image creates both so `docker run` works without volumes too.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtualenv with the package and its pinned-range dependencies ------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/ksr
WORKDIR /src
# Packaging first: the dependency layer is rebuilt only when setup.cfg or the producer
# client (clients/python, a dependency of the runner: its one copy of runner.client) changes.
COPY clients/python ./clients/python
COPY setup.cfg pyproject.toml README.md ./
RUN mkdir runner election probes \
 && touch runner/__init__.py election/__init__.py probes/__init__.py \
 && printf '__version__ = "0"\n' > runner/__init__.py \
 && /opt/ksr/bin/pip install --no-compile ./clients/python . \
 && /opt/ksr/bin/pip uninstall -y kube-stream-runner \
 && rm -rf build ./*.egg-info clients runner election probes
COPY runner ./runner
COPY election ./election
COPY probes ./probes
# Byte-compile now: the root filesystem is read-only at run time.
RUN /opt/ksr/bin/pip install --no-compile --no-deps . \
 && /opt/ksr/bin/python -m compileall -q /opt/ksr \
 && /opt/ksr/bin/ksr --help >/dev/null

# -- run ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kube-stream-runner" \
      org.opencontainers.image.description="Redis Streams job messages in, Kubernetes Jobs out" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 ksr \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin ksr \
 && install -d -o 10001 -g 10001 -m 0750 /run/ksr
COPY --from=build /opt/ksr /opt/ksr
ENV PATH=/opt/ksr/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KSR_RUNTIME_DIR=/run/ksr \
    PROMETHEUS_MULTIPROC_DIR=/run/ksr/metrics \
    HTTP_SERVER_PORT=8080 \
    KSR_LOG_FORMAT=json
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /run/ksr
EXPOSE 8080
# `ksr run` handles SIGTERM: stop reading, finish in-flight creates, release the Lease.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ksr"]
CMD ["run"]
