"""Schemathesis drives every operation of the OpenAPI document the status function serves,
over real HTTP against a real redis-server, with generated valid and invalid requests: no
server error, and every answer matches the document (status codes, headers, bodies)."""

# The fixtures imported from tests.status_fixtures are parameters of the tests below.
# ruff: noqa: F811

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from functions.status.app import openapi_document
from tests.status_fixtures import (  # noqa: F401 - fixtures
    admin_settings,
    as_admin,
    auth_settings,
    dead_letter_app,
    store,
)

OPERATIONS = [
    (path, method.upper(), schemathesis.GenerationMode.POSITIVE)
    for path, item in openapi_document()["paths"].items()
    for method in item
] + [
    # Invalid requests, for each operation that takes any input.
    (path, method.upper(), schemathesis.GenerationMode.NEGATIVE)
    for path, item in openapi_document()["paths"].items()
    for method, operation in item.items()
    if operation.get("parameters") or operation.get("requestBody")
]


@pytest.fixture
def served_schema(dead_letter_app, serve):
    """The document of the app with every route on, the dead-letter sink included."""
    return schemathesis.openapi.from_url(f"{serve(dead_letter_app)}/openapi.json")


@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS)
def test_no_operation_answers_a_server_error_or_breaks_the_document(
    served_schema, path, method, mode
):
    operation = served_schema[path][method]

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def exercise(case):
        case.call_and_validate(headers=as_admin())

    exercise()
