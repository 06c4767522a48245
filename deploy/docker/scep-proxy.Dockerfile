# scep-proxy: the SCEP proxy (gunicorn).
# Default command: `scep-proxy http`. Other commands of this image:
#   `scep-proxy grpc` (ScepGateway, port 50053; health check role scep-proxy-grpc).
# Build from the repository root:
#   docker build -f deploy/docker/scep-proxy.Dockerfile -t mdmscep/scep-proxy:dev .
#
# The base is pinned by version tag. Production builds pin its digest too (deploy/README.md):
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm --format '{{json .Manifest.Digest}}'
#   then write FROM python:3.11.13-slim-bookworm@sha256:<digest> in both stages below.

FROM python:3.11.13-slim-bookworm AS build
WORKDIR /src
# Third-party packages first, exactly as pinned (--no-deps: the pin file is complete), so this layer
# is reused until requirements/runtime.txt changes.
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      -r requirements/runtime.txt
# Only this service's package and the shared library, built as wheels with a pinned setuptools
# (outside the venv); `pip check` fails the build if a dependency they declare is not pinned.
COPY services/common services/common
COPY services/scep_proxy services/scep_proxy
RUN pip install --no-cache-dir --disable-pip-version-check setuptools==80.9.0 \
 && pip wheel --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation \
      --wheel-dir /wheels ./services/common ./services/scep_proxy \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /wheels/*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:3.11.13-slim-bookworm
LABEL org.opencontainers.image.title="mdmscep scep-proxy"
RUN groupadd --system --gid 10001 mdmscep \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mdmscep
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /opt/mdmscep/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/mdmscep
USER 10001:10001
EXPOSE 8082 50053
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/opt/mdmscep/healthcheck.py", "scep-proxy-http"]
# SIGTERM drains: gunicorn finishes requests in flight (20 s), gRPC servers stop with a 10 s grace.
STOPSIGNAL SIGTERM
CMD ["scep-proxy", "http"]
