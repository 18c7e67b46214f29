#!/usr/bin/env bash
# Known vulnerabilities in every locked dependency: pip-audit over each image's lock
# (requirements/lock/*.txt) against the OSV database, and npm audit over the sharp reference
# used by the thumbnail benchmark. Fails closed: a package that could not be checked, or a
# database that does not answer, fails the audit as a vulnerability would (pip-audit's PyPI
# service is not used: where PyPI's per-release JSON API is missing it skips every package and
# still reports success).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/var/audit-venv"
pip_audit_version="2.10.1"

answers_osv='
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen("https://api.osv.dev/", timeout=10)
except urllib.error.HTTPError:
    pass  # any HTTP answer: the service is there
except OSError:
    sys.exit(1)
'
if ! python3 -c "$answers_osv"; then
    echo "audit: FAILED: the OSV database (https://api.osv.dev) does not answer from here, so" \
        "nothing was checked" >&2
    exit 1
fi
if ! "$tools/bin/pip-audit" --version 2>/dev/null | grep -q "$pip_audit_version"; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet "pip-audit==$pip_audit_version"
fi

status=0
for lock in "$root"/requirements/lock/*.txt; do
    echo "== ${lock#"$root"/}"
    "$tools/bin/pip-audit" --requirement "$lock" --require-hashes --disable-pip --no-deps \
        --vulnerability-service osv --strict --progress-spinner off || status=1
done
echo "== scripts/sharp (npm)"
(cd "$root/scripts/sharp" && npm audit --audit-level=low) || status=1
if [ "$status" -ne 0 ]; then
    echo "audit: FAILED (a vulnerability, an unchecked package, or an unreachable database; see above)" >&2
else
    echo "audit: no known vulnerabilities"
fi
exit "$status"
