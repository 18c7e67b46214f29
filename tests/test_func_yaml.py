"""Each function's func.yaml is valid against Knative func's own JSON Schema."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "tests/schemas/knative/func_yaml.json").read_text())


@pytest.mark.parametrize("function", ["thumbnail", "embed", "status"])
def test_func_yaml_is_valid_against_funcs_schema(function):
    document = yaml.safe_load((ROOT / "functions" / function / "func.yaml").read_text())
    document["created"] = document["created"].isoformat()  # YAML parses it as a datetime
    jsonschema.Draft4Validator(SCHEMA).validate(document)
