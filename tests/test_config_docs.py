"""docs/configuration.md's settings tables are generated from functions/common/config.py."""

from __future__ import annotations

import contextlib
import os
import re

from scripts import gen_config_docs
from scripts.gen_config_docs import DOC, SECTIONS, render, rendered_page

REGENERATE = (
    "docs/configuration.md is stale: regenerate it with `python -m scripts.gen_config_docs`"
)


def test_the_settings_tables_in_the_docs_are_generated_from_the_settings_models():
    page = DOC.read_text()
    assert page == rendered_page(page), REGENERATE


def test_every_field_read_from_the_environment_has_a_description():
    undescribed = [
        f"{settings.__name__}.{name}"
        for settings, _ in SECTIONS
        for name, field in settings.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undescribed == []


def test_every_variable_the_settings_read_is_in_the_generated_tables(monkeypatch):
    """What `from_env()` looks up (os.environ.get) is what the tables list, and no more."""
    looked_up: set[str] = set()
    real_get = os.environ.get

    def get(name: str, default: str | None = None) -> str | None:
        looked_up.add(name)
        return real_get(name, default)

    monkeypatch.setattr(os.environ, "get", get)
    for settings, _ in SECTIONS:
        # Required variables are unset here; they are looked up all the same.
        with contextlib.suppress(ValueError):
            settings.from_env()
    looked_up.discard("PYDANTIC_SETTINGS_DEBUG")  # pydantic-settings' own switch
    listed = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", render(), re.MULTILINE))
    assert looked_up == listed


def test_the_check_mode_fails_on_a_stale_page(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text(DOC.read_text().replace("| `REDIS_URL` |", "| `REDIS_URI` |"))
    monkeypatch.setattr(gen_config_docs, "DOC", stale)

    assert gen_config_docs.main(["--check"]) == 1
    assert "python -m scripts.gen_config_docs" in capsys.readouterr().err
    assert gen_config_docs.main([]) == 0
    assert gen_config_docs.main(["--check"]) == 0
    assert stale.read_text() == DOC.read_text()
