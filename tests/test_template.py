"""Weave classes: self, inheritance, overrides, inherited options and definition order."""

import asyncio

import pytest

from wove import Weave, weave


class Report(Weave):
    @Weave.do
    def user(self, user_id):
        return {"id": user_id, "weave": type(self).__name__}

    @Weave.do
    def summary(self, user):
        return f"user {user['id']}"


def test_self_is_not_a_dependency_and_is_an_instance_of_the_class():
    with weave(Report, user_id=7) as w:
        pass
    assert w.result.user == {"id": 7, "weave": "Report"}
    assert w.result.summary == "user 7"
    assert w.execution_plan["dependencies"] == {
        "data": set(),
        "user": set(),
        "summary": {"user"},
    }


def test_a_class_can_be_run_many_times():
    for user_id in (1, 2):
        with weave(Report, user_id=user_id) as w:
            pass
        assert w.result.final == f"user {user_id}"


def test_subclass_inherits_and_overrides_tasks():
    class AdminReport(Report):
        @Weave.do
        def summary(self, user, role):
            return f"{role} {user['id']}"

        @Weave.do
        def audit(self, summary):
            return summary.upper()

    with weave(AdminReport, user_id=3, role="admin") as w:
        pass
    assert w.result.user == {"id": 3, "weave": "AdminReport"}
    assert w.result.summary == "admin 3"
    assert w.result.final == "ADMIN 3"
    with weave(Report, user_id=3) as w:  # the base class is unchanged
        pass
    assert w.result.final == "user 3"


def test_inline_override_may_change_the_signature():
    with weave(Report, user_id=7) as w:

        @w.do
        def user(user_id, is_admin=False):
            return {"id": user_id * 10, "admin": is_admin}

    assert w.result.user == {"id": 70, "admin": False}
    assert w.result.summary == "user 70"


def test_inline_override_may_depend_on_a_new_inline_task():
    with weave(Report, user_id=7) as w:

        @w.do
        def user(profile):
            return {"id": profile}

        @w.do
        def profile(user_id):
            return user_id + 1

    assert w.result.summary == "user 8"
    assert w.execution_plan["dependencies"]["user"] == {"profile"}
    assert list(w.result) == [{"id": 8}, "user 8", 8]


# --- options --------------------------------------------------------------------------------


class Flaky(Weave):
    @Weave.do(retries=2)
    def fetched(self):
        return "class version"


def failing_twice(attempts):
    """A task body that fails on its first two attempts and then returns the count."""

    def body():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)}")
        return len(attempts)

    return body


def test_inline_override_inherits_options_it_does_not_give():
    attempts = []
    body = failing_twice(attempts)
    with weave(Flaky) as w:

        @w.do(timeout=5.0)
        def fetched():
            return body()

    assert w.result.fetched == 3
    assert len(attempts) == 3


def test_explicit_retries_zero_wins_over_inherited_retries():
    attempts = []
    body = failing_twice(attempts)
    with pytest.raises(ConnectionError, match="attempt 1"), weave(Flaky) as w:

        @w.do(retries=0)
        def fetched():
            return body()

    assert len(attempts) == 1


def test_subclass_override_inherits_options_of_the_base_task():
    attempts = []
    body = failing_twice(attempts)

    class FlakierStill(Flaky):
        @Weave.do
        def fetched(self):
            return body()

    with weave(FlakierStill) as w:
        pass
    assert w.result.fetched == 3
    assert len(attempts) == 3


def test_subclass_override_with_explicit_retries_zero():
    attempts = []
    body = failing_twice(attempts)

    class NoRetry(Flaky):
        @Weave.do(retries=0)
        def fetched(self):
            return body()

    with pytest.raises(ConnectionError, match="attempt 1"), weave(NoRetry):
        pass
    assert len(attempts) == 1


# --- definition order and .final ----------------------------------------------------------


class Base(Weave):
    @Weave.do
    def a(self):
        return "a"

    @Weave.do
    def b(self):
        return "b"


class Child(Base):
    @Weave.do
    def c(self):
        return "c"

    @Weave.do
    def a(self):  # overrides Base.a: keeps its position, first
        return "child a"


def test_class_body_order_base_classes_first():
    with weave(Child) as w:
        pass
    assert list(w.result) == ["child a", "b", "c"]
    assert w.result.final == "c"


def test_subclass_override_keeps_the_base_position():
    class OverridesLast(Base):
        @Weave.do
        def b(self):
            return "new b"

    class OverridesFirst(Base):
        @Weave.do
        def a(self):
            return "new a"

    with weave(OverridesLast) as w:
        pass
    assert list(w.result) == ["a", "new b"]
    with weave(OverridesFirst) as w:
        pass
    assert list(w.result) == ["new a", "b"]
    assert w.result.final == "b"


def test_inline_override_keeps_position_and_new_tasks_come_after():
    with weave(Child) as w:

        @w.do
        def z():
            return "z"

        @w.do
        def a():
            return "inline a"

    first, *middle, last = w.result
    assert first == "inline a"
    assert middle == ["b", "c"]
    assert last == "z"
    assert w.result.final == "z"


def test_inline_override_of_the_last_task_keeps_it_final():
    with weave(Child) as w:

        @w.do
        def c():
            return "inline c"

    assert list(w.result) == ["child a", "b", "inline c"]
    assert w.result.final == "inline c"


def test_order_and_final_are_the_same_with_async_with():
    async def main():
        async with weave(Child) as w:

            @w.do
            async def z():
                return "z"

            @w.do
            async def a():
                return "inline a"

        return w.result

    result = asyncio.run(main())
    assert list(result) == ["inline a", "b", "c", "z"]
    assert result.final == "z"


def test_async_class_tasks_in_async_with():
    class Async(Weave):
        @Weave.do
        async def user(self, user_id):
            return user_id

        @Weave.do
        def summary(self, user):
            return f"user {user}"

    async def main():
        async with weave(Async, user_id=5) as w:
            pass
        return w.result

    assert asyncio.run(main()).final == "user 5"


def test_a_plain_method_overrides_an_inherited_task_like_a_method() -> None:
    attempts: list[int] = []

    class Base(Weave):
        @Weave.do("numbers", retries=2)
        def doubled(self, number: int) -> int:
            return number * 2

        @Weave.do
        def total(self, doubled: list[int]) -> int:
            return sum(doubled)

    class Tripled(Base):
        def doubled(self, number: int) -> int:  # no decorator: still the task, new body
            attempts.append(number)
            if len(attempts) == 1:
                raise ConnectionError("flaky once")
            return number * 3

    with weave(Tripled, numbers=[1, 2]) as w:
        pass

    assert w.result.doubled == [3, 6]  # still mapped over `numbers`
    assert w.result.final == 9  # and still feeds `total`
    assert len(attempts) == 3  # retries=2 inherited: the first failure was retried
    assert list(Tripled.wove_tasks) == ["doubled", "total"]
