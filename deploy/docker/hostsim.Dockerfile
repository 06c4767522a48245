# hostsim: simulated Apple hosts and the fake APNs, for local stacks and demos only (never deployed).
# docker-compose.yml runs it as `demo` (`python -m hostsim --hosts 5`) and `fake-apns`
# (`python -m hostsim.fake_apns`). Simulated hosts get their identity certificate with the real
# `scepclient`, so the image has Debian's `scep` package besides Python.
# The simulator lives in tests/ (tests/hostsim, tests/support), copied whole so the image builds
# whatever modules exist; PYTHONPATH makes both `hostsim` and `tests.support.*` importable.
# Build from the repository root:
#   docker build -f deploy/docker/hostsim.Dockerfile -t mdmscep/hostsim:dev .
#
# The base is pinned by version tag. Production builds pin its digest too (deploy/README.md):
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm --format '{{json .Manifest.Digest}}'
#   then write FROM python:3.11.13-slim-bookworm@sha256:<digest> in both stages below.

FROM python:3.11.13-slim-bookworm AS build
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      -r requirements/runtime.txt
COPY services/common services/common
RUN pip install --no-cache-dir --disable-pip-version-check setuptools==80.9.0 \
 && pip wheel --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation \
      --wheel-dir /wheels ./services/common \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /wheels/*.whl \
 && /opt/venv/bin/pip check

FROM python:3.11.13-slim-bookworm
LABEL org.opencontainers.image.title="mdmscep hostsim (simulated hosts, fake APNs; local use only)"
ARG SCEP_VERSION=2.1.0-3+b4
RUN apt-get update \
 && apt-get install -y --no-install-recommends "scep=${SCEP_VERSION}" \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 mdmscep \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mdmscep
COPY --from=build /opt/venv /opt/venv
COPY tests /opt/mdmscep/tests
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/mdmscep/tests:/opt/mdmscep \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/mdmscep
USER 10001:10001
# Simulated hosts and the fake are clients and test doubles: compose decides what to check.
HEALTHCHECK NONE
CMD ["python", "-m", "hostsim", "--help"]
