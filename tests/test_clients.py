"""The object store and database Lambda clients classify failures as the pipeline needs."""

import pytest
import requests

from devstack.stack import LAMBDA_FUNCTION, REGION
from functions.common.config import LambdaSettings
from functions.common.errors import PermanentError, TransientError
from functions.common.lambda_client import DatabaseLambda
from functions.common.storage import ObjectStore


def storage_settings(stack):
    return stack.storage_settings(connect_timeout_s=0.5, read_timeout_s=2, max_attempts=1)


def lambda_settings(endpoint_url, function_name=LAMBDA_FUNCTION):
    return LambdaSettings(
        function_name=function_name,
        endpoint_url=endpoint_url,
        region=REGION,
        timeout_s=2,
        max_attempts=1,
    )


@pytest.fixture
def lambda_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")


def test_an_object_round_trips_through_the_s3_server(stack):
    store = ObjectStore(storage_settings(stack))
    store.upload("photos", "clients/a.bin", b"payload", "application/octet-stream")
    assert store.download("photos", "clients/a.bin", None, max_bytes=100) == b"payload"


def test_a_missing_object_is_a_permanent_failure(stack):
    store = ObjectStore(storage_settings(stack))
    with pytest.raises(PermanentError) as failure:
        store.download("photos", "clients/nothing-here.jpg", None, max_bytes=100)
    assert failure.value.reason == "missing"


def test_a_missing_objects_failure_names_the_users_key_and_not_the_bucket(stack):
    store = ObjectStore(storage_settings(stack))
    with pytest.raises(PermanentError) as failure:
        store.download("photos", "clients/nothing-here.jpg", None, max_bytes=100)
    assert failure.value.detail == "clients/nothing-here.jpg is no longer in the bucket"


def test_an_object_over_the_byte_limit_is_refused_before_reading_it(stack):
    store = ObjectStore(storage_settings(stack))
    store.upload("photos", "clients/big.bin", b"x" * 1000, "application/octet-stream")
    with pytest.raises(PermanentError) as failure:
        store.download("photos", "clients/big.bin", None, max_bytes=999)
    assert failure.value.reason == "too_large"


def test_an_unreachable_object_store_is_a_transient_failure(stack, refused_port):
    unreachable = f"http://127.0.0.1:{refused_port}"
    store = ObjectStore(storage_settings(stack).replace(endpoint_url=unreachable))
    with pytest.raises(TransientError):
        store.download("photos", "a.jpg", None, max_bytes=100)


def test_the_lambda_receives_the_payload_through_the_invoke_api(stack, lambda_env):
    DatabaseLambda(lambda_settings(stack.urls["lambda"])).invoke({"key": "clients/marker"})
    calls = requests.get(f"{stack.urls['lambda']}/_invocations", timeout=5).json()
    assert (calls[-1]["function"], calls[-1]["payload"]) == (
        LAMBDA_FUNCTION,
        {"key": "clients/marker"},
    )


def fail_next_call(stack, kind):
    order = {"count": 1, "kind": kind}
    requests.post(f"{stack.urls['lambda']}/_fail-next", json=order, timeout=5).raise_for_status()


def test_a_lambda_service_error_is_a_transient_failure(stack, lambda_env):
    fail_next_call(stack, "service")
    with pytest.raises(TransientError, match="unavailable"):
        DatabaseLambda(lambda_settings(stack.urls["lambda"])).invoke({"key": "clients/x"})


def test_a_lambda_function_error_is_a_transient_failure_with_the_functions_error(stack, lambda_env):
    fail_next_call(stack, "function")
    with pytest.raises(TransientError, match=r"failed: .*injected function failure"):
        DatabaseLambda(lambda_settings(stack.urls["lambda"])).invoke({"key": "clients/x"})


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"blob": "x" * (6 * 1024 * 1024)}, id="over 6 MB"),
        pytest.param({"score": float("nan")}, id="not JSON"),
    ],
)
def test_a_payload_lambda_refuses_is_a_permanent_failure(stack, lambda_env, payload):
    with pytest.raises(PermanentError) as failure:
        DatabaseLambda(lambda_settings(stack.urls["lambda"])).invoke(payload)
    assert failure.value.reason == "lambda_rejected"


def test_the_lambda_stand_in_refuses_an_unknown_failure_kind(stack):
    order = {"count": 1, "kind": "sometimes"}
    response = requests.post(f"{stack.urls['lambda']}/_fail-next", json=order, timeout=5)
    assert response.status_code == 400


def test_an_unknown_lambda_function_is_a_transient_failure_not_a_crash(stack, lambda_env):
    settings = lambda_settings(stack.urls["lambda"]).replace(function_name="nope")
    with pytest.raises(TransientError):
        DatabaseLambda(settings).invoke({})
