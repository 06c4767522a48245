# scepserver: a micromdm SCEP CA (scepserver 2.1.0 from Debian's `scep` package), for local stacks,
# demos and tests: the admin's "custom" CA and the device identity CA in docker-compose.yml.
# The entry point creates the CA in the depot volume on first start, then runs
# `scepserver -allowrenew 0` with the challenge from SCEP_CHALLENGE_PASSWORD (scepserver-entrypoint.sh).
# Build from the repository root:
#   docker build -f deploy/docker/scepserver.Dockerfile -t mdmscep/scepserver:dev .
#
# The base (Debian 12 "bookworm") is pinned by version tag. Production builds pin its digest
# too (deploy/README.md):
#   docker buildx imagetools inspect debian:12.11-slim --format '{{json .Manifest.Digest}}'
#   then write FROM debian:12.11-slim@sha256:<digest> below.

FROM debian:12.11-slim
LABEL org.opencontainers.image.title="mdmscep scepserver (micromdm scep, Debian package)"
# Debian's exact version of the package; bump it together with the base image.
ARG SCEP_VERSION=2.1.0-3+b4
RUN apt-get update \
 && apt-get install -y --no-install-recommends "scep=${SCEP_VERSION}" \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10002 scep \
 && useradd --system --uid 10002 --gid 10002 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin scep \
 && mkdir -p /var/lib/scep/depot /var/lib/scep/public \
 && chown -R 10002:10002 /var/lib/scep
COPY --chmod=0755 deploy/docker/scepserver-entrypoint.sh /usr/local/bin/scepserver-entrypoint
ENV SCEP_FILE_DEPOT=/var/lib/scep/depot \
    SCEP_HTTP_LISTEN_PORT=8080
VOLUME ["/var/lib/scep/depot"]
USER 10002:10002
EXPOSE 8080
# GetCACaps over bash's /dev/tcp: the slim base has no curl, and this needs no extra package.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SCEP_HTTP_LISTEN_PORT} && printf 'GET /scep?operation=GetCACaps HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/scepserver-entrypoint"]
