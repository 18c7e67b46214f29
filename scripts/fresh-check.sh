#!/usr/bin/env bash
# make fresh-check: the README's two commands, `make demo` then `make test`, from a fresh clone
# of this repository's HEAD, in a clean Debian bookworm container: nothing from this machine but
# the committed files, git and make (what a newcomer has who cloned the repository) and, where
# the network intercepts TLS, this machine's CA bundle for pip and npm. Everything else (Python's
# venv and headers, a compiler, redis-server, Chromium, Node.js) the make targets must install.
#   scripts/fresh-check.sh [BASE_IMAGE]    (default: photo-pipeline/debian:bookworm)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base="${1:-photo-pipeline/debian:bookworm}"
ca_bundle="${FRESH_CHECK_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

[ "$base" != "photo-pipeline/debian:bookworm" ] || "$root/scripts/make-base-image.sh" "$base"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone --quiet "$root" "$work/repo"
echo "fresh-check: $(git -C "$work/repo" log -1 --format='%h %s' | cut -c1-72) in $base"

ca_mount=()
ca_env=()
if [ -f "$ca_bundle" ]; then
    ca_mount=(--volume "$ca_bundle:/etc/ssl/host-ca.crt:ro")
    ca_env=(--env PIP_CERT=/etc/ssl/host-ca.crt --env NODE_EXTRA_CA_CERTS=/etc/ssl/host-ca.crt)
fi
start=$SECONDS
docker run --rm --shm-size 1g --volume "$work/repo:/repo" --workdir /repo \
    "${ca_mount[@]}" "${ca_env[@]}" "$base" bash -euo pipefail -c '
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends git make >/dev/null
        make demo
        make test'
echo "fresh-check: make demo and make test passed in a fresh container ($((SECONDS - start)) s)"
