"""The Redis keys the RQ environment uses beside RQ's own, and the job's function.

* ``wove:rq:replies:<caller>``: a list, the sealed replies to one :class:`RQEnv`
  instance's calls, as JSON ``[job id, kind, data]``; its waiter pops them.
* ``wove:rq:claim:<job id>``: set once (``NX``) when a worker starts the job: a second
  delivery of the same job is refused, and the caller knows the function may have run.
* ``wove:rq:lease:<job id>``: set with the claim and renewed while the function runs;
  when it expires without a reply, the worker was lost.
"""

from __future__ import annotations

from typing import Final

#: The dotted path of the function every Wove job runs on an RQ worker.
JOB_FUNCTION: Final = "wove.contrib.rq.worker.run_job"
#: Envelope kinds: a task's call, a detached weave, a reply.
CALL: Final = "call"
WEAVE: Final = "weave"
REPLY: Final = "reply"
#: Kinds of what the reply list carries: a sealed reply; a refusal notice (unsigned: it
#: can only fail a call as never run).
SEALED: Final = "sealed"
REFUSED: Final = "refused"


def replies_key(caller: str) -> str:
    return f"wove:rq:replies:{caller}"


def claim_key(job_id: str) -> str:
    return f"wove:rq:claim:{job_id}"


def lease_key(job_id: str) -> str:
    return f"wove:rq:lease:{job_id}"
