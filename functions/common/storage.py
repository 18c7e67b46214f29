"""The object store (Backblaze B2 through its S3-compatible API), via boto3."""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from functions.common.config import StorageSettings
from functions.common.errors import PermanentError, TransientError

_MISSING = {"NoSuchKey", "404", "NoSuchVersion", "NoSuchBucket"}


class ObjectStore:
    def __init__(self, settings: StorageSettings) -> None:
        self._s3 = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            config=Config(
                connect_timeout=settings.connect_timeout_s,
                read_timeout=settings.read_timeout_s,
                retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
                # B2 rejects the CRC checksums newer botocore sends by default.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                max_pool_connections=32,
            ),
        )

    def download(self, bucket: str, key: str, version_id: str | None, max_bytes: int) -> bytes:
        """The object's bytes; a missing object or one over `max_bytes` is a permanent failure."""
        extra = {"VersionId": version_id} if version_id else {}
        try:
            response = self._s3.get_object(Bucket=bucket, Key=key, **extra)
            size = response["ContentLength"]
            if size > max_bytes:
                response["Body"].close()
                raise PermanentError("too_large", f"{size} bytes exceeds the {max_bytes} limit")
            return response["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _MISSING:
                # The detail reaches the user's status: their own key, not the bucket's name.
                raise PermanentError("missing", f"{key} is no longer in the bucket") from exc
            raise TransientError(f"download of {key} failed: {code}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"download of {key} failed: {exc}") from exc

    def upload(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        try:
            self._s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"upload of {key} failed: {exc}") from exc
