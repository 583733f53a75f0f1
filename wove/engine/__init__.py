"""The dataflow engine: one :class:`~.run.Run` per run of a weave.

* :mod:`.run`: the run's state (values, errors, counters, the first failure) and
  dispatch, with continuations;
* :mod:`.workers`: the sync and async worker loops, mapped items, the fan-out;
* :mod:`.attempt`: the policy of one call (retries, timeouts, annotations, trace
  records), for sync and async alike;
* :mod:`.timed`: a call under a timeout, and its abandonment;
* :mod:`.mapped`: a mapped task's items; :mod:`.stuck`: the debug stuck-task report.
"""

from .run import LoopBinding, Run, current_run

__all__ = ["LoopBinding", "Run", "current_run"]
