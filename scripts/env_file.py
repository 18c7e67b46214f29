"""KEY=VALUE files (the deploy's secrets file) as kustomize's secretGenerator reads them.
Standard library only: scripts/deploy imports it."""

from __future__ import annotations

from pathlib import Path


class EnvFileError(ValueError):
    """A line that is not KEY=VALUE."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as kustomize reads them: no quoting, `#` comments, blank lines skipped."""
    pairs = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, separator, value = stripped.partition("=")
        if not separator or not key:
            raise EnvFileError(f"{path}:{number}: expected KEY=VALUE")
        pairs[key] = value
    return pairs
