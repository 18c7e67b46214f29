"""devstack/b2_sender.py's redelivery, which the demo, loadtest and soak upload through: as B2
sends a notification again when the receiver answers 5xx or cannot be reached."""

import pytest
import requests
from flask import Flask

from devstack.b2_sender import deliver_until_taken, object_created

SECRET = "s3cret"
EVENTS = [object_created("photos", "ann/1.jpg", 1000)]


def answering(*codes: int) -> tuple[Flask, list[int]]:
    """A receiver stand-in answering `codes` in turn (the last one from then on)."""
    app, answered = Flask("answering"), []

    @app.post("/")
    def take() -> tuple[str, int]:
        answered.append(codes[min(len(answered), len(codes) - 1)])
        return "", answered[-1]

    return app, answered


def test_the_sender_redelivers_a_webhook_answered_5xx_until_it_is_taken(serve):
    app, answered = answering(503, 502, 200)
    response = deliver_until_taken(serve(app), EVENTS, SECRET, backoff_s=0.01)
    assert (response.status_code, answered) == (200, [503, 502, 200])


def test_the_sender_does_not_redeliver_a_refused_webhook(serve):
    app, answered = answering(401)
    assert deliver_until_taken(serve(app), EVENTS, SECRET, backoff_s=0.01).status_code == 401
    assert answered == [401]


def test_the_sender_gives_up_after_its_attempts_with_the_last_answer(serve):
    app, answered = answering(503)
    response = deliver_until_taken(serve(app), EVENTS, SECRET, attempts=3, backoff_s=0.01)
    assert (response.status_code, len(answered)) == (503, 3)


def test_the_sender_raises_when_the_receiver_stays_unreachable(refused_port):
    with pytest.raises(requests.ConnectionError):
        deliver_until_taken(f"http://127.0.0.1:{refused_port}", EVENTS, SECRET, backoff_s=0.01)
