"""A stand-in for the database-update Lambda ("Lambda 2") that speaks the AWS Lambda Invoke API.

Local tooling only: the functions call it through boto3's `lambda.invoke` with an
`endpoint_url`, exactly as they call the real Lambda. It records every invocation so tests and
the demo can see what the database would have received, and can be told to fail the next N
calls to exercise retries: `POST /_fail-next {"count": N, "kind": "service"}` answers them 500
`ServiceException` (the Lambda service failed), `"kind": "function"` answers them as Lambda
reports the function itself failing: 200 with `X-Amz-Function-Error: Unhandled` and the
error as the body. Like the real service it refuses a payload over 6 MB (413
`RequestEntityTooLargeException`) or one that is not strict JSON (400
`InvalidRequestContentException`; NaN and Infinity are not JSON).

    python -m devstack.lambda_standin --port 9001 --function photo-db-update
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections import deque
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

# The synchronous Invoke API's request payload limit.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
FAILURE_KINDS = ("service", "function")


class InvocationLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._invocations: list[dict[str, Any]] = []
        self._failures: deque[str] = deque()

    def add(self, function_name: str, payload: Any) -> None:
        with self._lock:
            self._invocations.append(
                {"function": function_name, "payload": payload, "at": time.time()}
            )

    def take_failure(self) -> str | None:
        """The kind of failure the next call is to answer with, if one is still to come."""
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def fail_next(self, count: int, kind: str) -> None:
        with self._lock:
            self._failures = deque([kind] * count)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._invocations)


def _aws_error(status: int, error_type: str, message: str) -> Response:
    response = jsonify(Type="User" if status < 500 else "Service", message=message)
    response.status_code = status
    response.headers["x-amzn-ErrorType"] = error_type
    return response


def _function_error(message: str) -> Response:
    """How Lambda answers an invocation whose function threw: the call itself succeeded."""
    response = jsonify(errorMessage=message, errorType="Error", stackTrace=[])
    response.headers["X-Amz-Function-Error"] = "Unhandled"
    response.headers["X-Amz-Executed-Version"] = "$LATEST"
    return response


def _strict_json(body: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(body, parse_constant=refuse)


def create_app(function_names: set[str]) -> Flask:
    app = Flask("lambda-standin")
    log = InvocationLog()

    @app.post("/2015-03-31/functions/<name>/invocations")
    def invoke(name: str) -> Response:
        if name not in function_names:
            return _aws_error(404, "ResourceNotFoundException", f"Function not found: {name}")
        if request.headers.get("X-Amz-Invocation-Type", "RequestResponse") != "RequestResponse":
            return _aws_error(400, "InvalidParameterValueException", "only RequestResponse")
        body = request.get_data()
        if len(body) > MAX_PAYLOAD_BYTES:
            return _aws_error(
                413,
                "RequestEntityTooLargeException",
                f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the InvokeFunction "
                "operation",
            )
        try:
            payload = _strict_json(body or b"{}")
        except ValueError:
            return _aws_error(
                400, "InvalidRequestContentException", "Could not parse request body into json"
            )
        failure = log.take_failure()
        if failure == "service":
            return _aws_error(500, "ServiceException", "injected failure")
        if failure == "function":
            return _function_error("injected function failure")
        log.add(name, payload)
        response = jsonify(statusCode=200, updated=True)
        response.headers["X-Amz-Executed-Version"] = "$LATEST"
        response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        return response

    @app.get("/_invocations")
    def invocations() -> Response:
        return jsonify(log.snapshot())

    @app.post("/_fail-next")
    def fail_next() -> Response | tuple[Response, int]:
        order = request.get_json(force=True)
        kind = order.get("kind", "service")
        if kind not in FAILURE_KINDS:
            return jsonify(error=f"kind must be one of {', '.join(FAILURE_KINDS)}"), 400
        log.fail_next(int(order.get("count", 1)), kind)
        return jsonify(ok=True)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(ok=True)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--function", action="append", required=True, dest="functions")
    args = parser.parse_args()
    make_server(
        args.host, args.port, create_app(set(args.functions)), threaded=True
    ).serve_forever()


if __name__ == "__main__":
    main()
