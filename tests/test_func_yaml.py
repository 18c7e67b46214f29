"""Each function's func.yaml is valid against Knative func's own JSON Schema, and is a
descriptor only: it neither subscribes to events nor claims a builder (docs/deploy.md)."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "tests/schemas/knative/func_yaml.json").read_text())
FUNCTIONS = ["thumbnail", "embed", "status"]
# func.yaml's build fields that tell `func build` how to build the function.
BUILDER_FIELDS = {"builder", "builderImages", "buildpacks", "baseImage"}


def func_yaml(function: str) -> dict:
    return yaml.safe_load((ROOT / "functions" / function / "func.yaml").read_text())


@pytest.mark.parametrize("function", FUNCTIONS)
def test_func_yaml_is_valid_against_funcs_schema(function):
    document = func_yaml(function)
    document["created"] = document["created"].isoformat()  # YAML parses it as a datetime
    jsonschema.Draft4Validator(SCHEMA).validate(document)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_func_yaml_subscribes_to_nothing_so_only_our_triggers_deliver_events(function):
    assert "subscriptions" not in func_yaml(function).get("deploy", {})


@pytest.mark.parametrize("function", FUNCTIONS)
def test_func_yaml_claims_no_builder_since_only_our_dockerfiles_build_the_images(function):
    assert BUILDER_FIELDS & set(func_yaml(function).get("build", {})) == set()
