#!/bin/sh
# A CSR subject policy for micromdm's scepserver: `scepserver -csrverifierexec <this file>`.
#
# scepserver runs this for every PKIOperation, with the decrypted CSR (DER) on standard input, and
# issues the certificate only if it exits 0. The SCEP proxy cannot do this check: the CSR travels
# encrypted to the CA, so subject policy belongs to the CA (docs/security.md).
#
# CSR_SUBJECT_REGEX (extended regular expression, required) must match the subject printed as
# RFC 2253, e.g. '^CN=[A-Za-z0-9-]+,OU=fleet-[0-9a-f-]{36}(,|$)' for profiles that put
# $FLEET_VAR_SCEP_RENEWAL_ID in the OU. Unset, every CSR is refused (fail closed).
set -eu
[ -n "${CSR_SUBJECT_REGEX:-}" ] || { echo "csr-subject-policy: CSR_SUBJECT_REGEX is not set" >&2; exit 2; }
subject=$(head -c 65536 | openssl req -inform DER -noout -subject -nameopt RFC2253) || {
  echo "csr-subject-policy: not a CSR" >&2; exit 1; }
subject=${subject#subject=}
if printf '%s\n' "$subject" | grep -Eq -- "$CSR_SUBJECT_REGEX"; then
  exit 0
fi
echo "csr-subject-policy: subject refused: $subject" >&2
exit 1
