"""A stand-in for the database-update Lambda ("Lambda 2") that speaks the AWS Lambda Invoke API.

Local tooling only: the functions call it through boto3's `lambda.invoke` with an
`endpoint_url`, exactly as they call the real Lambda. It records every invocation so tests and
the demo can see what the database would have received, and can be told to fail the next N
calls to exercise retries.

    python -m scripts.lambda_standin --port 9001 --function photo-db-update
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server


class InvocationLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._invocations: list[dict[str, Any]] = []
        self._failures_left = 0

    def add(self, function_name: str, payload: Any) -> None:
        with self._lock:
            self._invocations.append(
                {"function": function_name, "payload": payload, "at": time.time()}
            )

    def take_failure(self) -> bool:
        with self._lock:
            if self._failures_left <= 0:
                return False
            self._failures_left -= 1
            return True

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures_left = count

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._invocations)


def _aws_error(status: int, error_type: str, message: str) -> Response:
    response = jsonify(Type="User" if status < 500 else "Service", message=message)
    response.status_code = status
    response.headers["x-amzn-ErrorType"] = error_type
    return response


def create_app(function_names: set[str]) -> Flask:
    app = Flask("lambda-standin")
    log = InvocationLog()

    @app.post("/2015-03-31/functions/<name>/invocations")
    def invoke(name: str) -> Response:
        if name not in function_names:
            return _aws_error(404, "ResourceNotFoundException", f"Function not found: {name}")
        if request.headers.get("X-Amz-Invocation-Type", "RequestResponse") != "RequestResponse":
            return _aws_error(400, "InvalidParameterValueException", "only RequestResponse")
        if log.take_failure():
            return _aws_error(500, "ServiceException", "injected failure")
        try:
            payload = json.loads(request.get_data() or b"{}")
        except ValueError:
            return _aws_error(400, "InvalidRequestContentException", "payload is not JSON")
        log.add(name, payload)
        response = jsonify(statusCode=200, updated=True)
        response.headers["X-Amz-Executed-Version"] = "$LATEST"
        response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        return response

    @app.get("/_invocations")
    def invocations() -> Response:
        return jsonify(log.snapshot())

    @app.post("/_fail-next")
    def fail_next() -> Response:
        log.fail_next(int(request.get_json(force=True).get("count", 1)))
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
