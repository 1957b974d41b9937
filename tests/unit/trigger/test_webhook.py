"""The webhook sender's retry policy: which statuses retry, how long it waits, when it gives up."""

from __future__ import annotations

from collections.abc import Iterator

from services.trigger.webhook import deliver, retryable


def responses(*statuses: int | None) -> Iterator[int | None]:
    yield from statuses


def run(*statuses: int | None, max_attempts: int = 5, stop_after: int | None = None):
    replies, waits = responses(*statuses), []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return stop_after is not None and len(waits) >= stop_after

    return deliver(lambda: next(replies), max_attempts, 0.5, 1.5, wait), waits


class TestDeliver:
    def test_a_2xx_is_delivered_at_once(self):
        """One successful request, no waiting."""
        result, waits = run(204)
        assert (result.outcome, result.attempts, waits) == ("delivered", 1, [])

    def test_server_errors_and_no_response_are_retried_with_growing_backoff(self):
        """503, no response, then 200: delivered on the third attempt after waits of 0.5 s and 1 s."""
        result, waits = run(503, None, 200)
        assert (result.outcome, result.status, result.attempts) == ("delivered", 200, 3)
        assert waits == [0.5, 1.0]

    def test_a_client_error_is_rejected_without_retrying(self):
        """400 will not get better: dead letter at once, with the status."""
        result, waits = run(400)
        assert (result.outcome, result.status, result.attempts, waits) == ("rejected", 400, 1, [])

    def test_giving_up_after_max_attempts_with_capped_waits(self):
        """Always 500: failed after the last attempt; waits double up to the cap, none after the last."""
        result, waits = run(500, 500, 500, 500, max_attempts=4)
        assert (result.outcome, result.status, result.attempts) == ("failed", 500, 4)
        assert waits == [0.5, 1.0, 1.5]

    def test_a_stop_during_backoff_interrupts(self):
        """SIGTERM while waiting: the message is left uncommitted for the next owner."""
        result, _ = run(503, 503, stop_after=1)
        assert result.outcome == "interrupted"

    def test_retryable_statuses(self):
        assert [retryable(s) for s in (None, 408, 429, 500, 503, 400, 404, 410)] == [True] * 5 + [False] * 3
