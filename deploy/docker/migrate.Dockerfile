# mdmscep-migrate: applies the SQL migrations (yoyo, under a PostgreSQL advisory lock) and exits.
# Run once per release before the services (compose `migrate`, Kubernetes Job `mdmscep-migrate`);
# safe to run from several replicas at once. The shared library is installed with its
# dependencies; the four service packages without theirs, only for their own migrations folders
# (located, never imported: mdmscep_common.migrate).
# Build from the repository root:
#   docker build -f deploy/docker/migrate.Dockerfile -t mdmscep/migrate:dev .
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
COPY services/admin_config services/admin_config
COPY services/mdm_endpoint services/mdm_endpoint
COPY services/profile_processor services/profile_processor
COPY services/scep_proxy services/scep_proxy
RUN pip install --no-cache-dir --disable-pip-version-check setuptools==80.9.0 \
 && pip wheel --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation \
      --wheel-dir /wheels ./services/common ./services/admin_config ./services/mdm_endpoint \
      ./services/profile_processor ./services/scep_proxy \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /wheels/*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:3.11.13-slim-bookworm
LABEL org.opencontainers.image.title="mdmscep migrate"
RUN groupadd --system --gid 10001 mdmscep \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mdmscep
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/mdmscep
USER 10001:10001
# A job that runs to completion: nothing to probe while it runs.
HEALTHCHECK NONE
CMD ["mdmscep-migrate"]
