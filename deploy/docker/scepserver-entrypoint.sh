#!/bin/sh
# Entry point of the scepserver image: a micromdm SCEP CA (Debian's `scep` package).
# Creates the CA in the depot volume on first start, then serves SCEP on SCEP_HTTP_LISTEN_PORT.
#
#   SCEP_FILE_DEPOT          depot directory, a volume [/var/lib/scep/depot]
#   SCEP_HTTP_LISTEN_PORT    port [8080]
#   SCEP_CHALLENGE_PASSWORD  challenge the CA enforces; read by scepserver from the environment, so
#                            it never shows in the process list. Empty: no challenge.
#   SCEP_CA_ORGANIZATION     organization of a new CA [mdmscep SCEP CA]
#   SCEP_CA_KEY_SIZE         RSA key size of a new CA [2048]
#   SCEP_CA_YEARS            validity of a new CA in years [10]
#   SCEP_CA_PUBLISH_DIR      optional: the CA certificate is copied there as ca.pem (a volume shared
#                            with services that must trust the CA, without sharing its key)
#
# Arguments are added to scepserver's (e.g. -debug, -crtvalid 30). Renewals are always allowed
# (-allowrenew 0): with the default 14-day window, scepserver refuses a re-issue for the same
# subject ("DN already exists"), which breaks the MDM's re-sends and renewals.
set -eu

depot="${SCEP_FILE_DEPOT:-/var/lib/scep/depot}"
export SCEP_FILE_DEPOT="$depot"
export SCEP_HTTP_LISTEN_PORT="${SCEP_HTTP_LISTEN_PORT:-8080}"

if [ ! -s "$depot/ca.pem" ]; then
    echo "scepserver-entrypoint: no CA in $depot, creating one" >&2
    mkdir -p "$depot"
    scepserver ca -init -depot "$depot" \
        -keySize "${SCEP_CA_KEY_SIZE:-2048}" \
        -years "${SCEP_CA_YEARS:-10}" \
        -organization "${SCEP_CA_ORGANIZATION:-mdmscep SCEP CA}"
fi

if [ -n "${SCEP_CA_PUBLISH_DIR:-}" ]; then
    # Write then rename: a reader never sees a half-written certificate.
    cp "$depot/ca.pem" "$SCEP_CA_PUBLISH_DIR/.ca.pem.tmp"
    mv "$SCEP_CA_PUBLISH_DIR/.ca.pem.tmp" "$SCEP_CA_PUBLISH_DIR/ca.pem"
fi

if [ -z "${SCEP_CHALLENGE_PASSWORD:-}" ]; then
    echo "scepserver-entrypoint: SCEP_CHALLENGE_PASSWORD is empty: the CA accepts any request" >&2
fi

exec scepserver -depot "$depot" -port "$SCEP_HTTP_LISTEN_PORT" -allowrenew 0 "$@"
