#!/usr/bin/env bash
# Installs the system packages the local stack needs (idempotent): Python's venv and headers and
# a C++ compiler (insightface builds its extension from source), redis-server, and with --node, Node.js + npm for the sharp comparison benchmark; with --chromium, the browser;
# with --wrk, the HTTP load generator of make bench-status.
set -euo pipefail
need=()
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3 python3-venv)
python3 -c 'import os, sysconfig; assert os.path.exists(sysconfig.get_path("include") + "/Python.h")' \
  >/dev/null 2>&1 || need+=(python3-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
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
