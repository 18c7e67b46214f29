#!/usr/bin/env bash
# Installs the system packages the local stack needs (idempotent): redis-server, and
# with --node, Node.js + npm for the sharp comparison benchmark; with --chromium, the browser;
# with --wrk, the HTTP load generator of make bench-status.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
for arg in "$@"; do
  case "$arg" in
    --node) command -v npm >/dev/null 2>&1 || need+=(nodejs npm) ;;
    --chromium) command -v chromium >/dev/null 2>&1 || need+=(chromium) ;;
    --wrk) command -v wrk >/dev/null 2>&1 || need+=(wrk) ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing system packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
