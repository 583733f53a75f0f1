"""Wove's benchmark suite: ``python -m bench`` (or ``make bench``).

Each workload runs against its raw baseline in the same process, interleaved, and the
ratio of the medians is compared with the target of the issue that set it.
"""
