"""devstack/fault_proxy.py, between a real boto3 S3 client and a real moto S3 server."""

import sys
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from devstack.fault_proxy import CONTROL_PATH, set_fault
from devstack.stack import CREDENTIAL, REGION, Processes

HOLD_S = 3.0
READ_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """A fault proxy (holding requests HOLD_S in its timeout windows) in front of moto."""
    with Processes(tmp_path_factory.mktemp("fault-proxy")) as processes:
        moto = processes.http(
            "s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "{port}"], "/"
        )
        command = [sys.executable, "-m", "devstack.fault_proxy", "--port", "{port}"]
        command += ["--upstream", moto, "--hold-s", str(HOLD_S)]
        url = processes.http("s3-proxy", command, CONTROL_PATH)
        s3_client(url).create_bucket(Bucket="photos")
        yield url


@pytest.fixture(autouse=True)
def no_fault(proxy):
    yield
    set_fault(proxy, "ok")


def s3_client(url: str):
    """One attempt per call, giving up on an answer after READ_TIMEOUT_S."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=CREDENTIAL,
        aws_secret_access_key=CREDENTIAL,
        config=Config(read_timeout=READ_TIMEOUT_S, retries={"total_max_attempts": 1}),
    )


def test_a_signed_put_and_get_go_through_to_the_s3_server(proxy):
    s3 = s3_client(proxy)
    body = bytes(range(256)) * 1024  # 256 KiB, streamed back in chunks
    s3.put_object(Bucket="photos", Key="u/photos/a.jpg", Body=body)
    assert s3.get_object(Bucket="photos", Key="u/photos/a.jpg")["Body"].read() == body
    assert s3.head_object(Bucket="photos", Key="u/photos/a.jpg")["ContentLength"] == len(body)


def test_in_an_error_window_every_request_is_answered_503(proxy):
    s3 = s3_client(proxy)
    set_fault(proxy, "error", 30)
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket="photos", Key="u/photos/b.jpg", Body=b"jpeg")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    set_fault(proxy, "ok")
    s3.put_object(Bucket="photos", Key="u/photos/b.jpg", Body=b"jpeg")


def test_in_a_timeout_window_a_request_is_held_past_the_clients_read_timeout(proxy):
    s3 = s3_client(proxy)
    set_fault(proxy, "timeout", 30)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        s3.put_object(Bucket="photos", Key="u/photos/c.jpg", Body=b"jpeg")
    assert time.monotonic() - started >= READ_TIMEOUT_S
    set_fault(proxy, "ok")
    # Held, never forwarded: the S3 server did not store it.
    with pytest.raises(ClientError, match="NoSuchKey"):
        s3.get_object(Bucket="photos", Key="u/photos/c.jpg")


def test_a_window_closes_by_itself_after_its_seconds(proxy):
    s3 = s3_client(proxy)
    set_fault(proxy, "error", 0.5)
    with pytest.raises(ClientError):
        s3.list_objects_v2(Bucket="photos")
    time.sleep(0.6)
    s3.list_objects_v2(Bucket="photos")
