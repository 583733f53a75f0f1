"""What a caller is told of a call that ended without a reply (no worker needed): the
class says whether the function may have run, and so whether resending is safe."""

from __future__ import annotations

import pytest
from celery import states
from celery.exceptions import TaskRevokedError, WorkerLostError

from wove import (
    InvalidOptionError,
    RemoteNeverRan,
    RemoteResultLost,
    RemoteTaskError,
    RemoteWorkerLost,
)
from wove.contrib.celery import CeleryEnv, replies
from wove.contrib.celery.envelope import EnvelopeError
from wove.contrib.celery.failures import UNSENT, WAIT_FAILED, WORKER_LOST, failure

KEYS = ["k" * 40]


def test_a_lease_that_expired_is_worker_lost_that_may_have_started() -> None:
    error = failure("fetch", "id-1", WORKER_LOST, 2.0, None)
    assert type(error) is RemoteWorkerLost
    assert error.may_have_started is True
    assert "was lost" in str(error)
    assert "may have started" in str(error)


def test_a_pool_process_lost_is_worker_lost() -> None:
    lost = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL)")
    error = failure("fetch", "id-1", states.FAILURE, lost, None)
    assert type(error) is RemoteWorkerLost
    assert error.may_have_started is True


def test_calls_that_never_ran_are_never_ran() -> None:
    refused = EnvelopeError("signature", "bad signature")
    cases = [
        failure("fetch", "id-1", UNSENT, ConnectionError("broker down"), None),
        failure("fetch", "id-1", states.FAILURE, refused, None),
        failure("fetch", "id-1", states.REVOKED, TaskRevokedError("expired"), None),
        failure("fetch", "id-1", states.REVOKED, TaskRevokedError("revoked"), None),
    ]
    for error in cases:
        assert type(error) is RemoteNeverRan, error
        assert error.may_have_started is False


def test_a_call_stopped_while_it_ran_and_other_celery_failures_stay_remote_task_errors() -> None:
    for error in (
        failure("fetch", "id-1", states.REVOKED, TaskRevokedError("terminated"), None),
        failure("fetch", "id-1", states.FAILURE, TimeoutError("time limit"), "Traceback..."),
    ):
        assert type(error) is RemoteTaskError
        assert error.may_have_started is True


def test_a_wait_that_failed_is_result_lost() -> None:
    error = failure("fetch", "id-1", WAIT_FAILED, ConnectionError("backend down"), None)
    assert type(error) is RemoteResultLost


def test_a_reply_recorded_as_lost_is_result_lost_not_the_functions_error() -> None:
    body = replies.lost_body(ConnectionError("Redis is down"), {"worker": "w1@host"})
    with pytest.raises(RemoteResultLost) as caught:
        replies.outcome("fetch", "id-1", body)
    error = caught.value
    assert error.remote_type == "ResultLost"
    assert "ran on w1@host" in str(error)
    assert "ConnectionError: Redis is down" in str(error)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease": 0}, "lease must be a number of seconds > 0"),
        ({"heartbeat": True}, "heartbeat must be a number of seconds > 0"),
        ({"lease": 1.0, "heartbeat": 1.0}, "must be shorter than lease"),
    ],
)
def test_lease_and_heartbeat_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        CeleryEnv(None, keys=KEYS, **options)  # type: ignore[arg-type]


def test_lease_and_heartbeat_default_to_two_seconds_renewed_every_half() -> None:
    env = CeleryEnv(None, keys=KEYS)
    assert (env.lease, env.heartbeat) == (2.0, 0.5)
