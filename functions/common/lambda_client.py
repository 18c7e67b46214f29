"""The existing database-update Lambda ("Lambda 2"), invoked synchronously through boto3."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from functions.common.config import LambdaSettings
from functions.common.errors import PermanentError, TransientError

# Lambda refuses these payloads whenever they are sent: retrying them only delays the failure.
_REJECTED_PAYLOAD_ERRORS = frozenset(
    {"RequestEntityTooLargeException", "InvalidRequestContentException"}
)


class DatabaseLambda:
    def __init__(self, settings: LambdaSettings) -> None:
        self._function_name = settings.function_name
        self._lambda = boto3.client(
            "lambda",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            config=Config(
                connect_timeout=3,
                read_timeout=settings.timeout_s,
                retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
                max_pool_connections=32,
            ),
        )

    def invoke(self, payload: dict[str, Any]) -> None:
        """Invoke with RequestResponse so a failure is seen here: TransientError (the event is
        retried) when the service or the function failed, PermanentError "lambda_rejected"
        when Lambda refuses the payload itself. What the function returns is not used."""
        try:
            response = self._lambda.invoke(
                FunctionName=self._function_name,
                InvocationType="RequestResponse",
                Payload=json.dumps(payload, separators=(",", ":")).encode(),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _REJECTED_PAYLOAD_ERRORS:
                raise PermanentError("lambda_rejected", str(exc)) from exc
            raise TransientError(f"database Lambda unavailable: {exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"database Lambda unavailable: {exc}") from exc
        body = response["Payload"].read()
        if response.get("FunctionError"):
            raise TransientError(f"database Lambda failed: {body[:300]!r}")
