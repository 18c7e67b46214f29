"""The two ways processing a photo can fail, and what the event pipeline does with each."""


class PermanentError(Exception):
    """The photo can never be processed (corrupt, unsupported, too large, ...).

    The function records the failure with its reason, replies 200 with a `*.failed`
    event, and the broker does not retry.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TransientError(Exception):
    """A dependency is unavailable or slow; the function answers 5xx so the broker retries."""
