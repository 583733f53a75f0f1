"""A tour of Wove in about a second: `make demo` (or `python examples/demo.py`).

Standard library only. Each section prints what it shows.
"""

from __future__ import annotations

import asyncio
import sys
import time

from wove import weave

# stdout and stderr (where debug=True writes) share the terminal: keep them in order.
sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def section(title: str) -> None:
    print(f"\n=== {title} ===")


def concurrency() -> None:
    section("1. Three slow calls, declared in order, run at the same time")
    start = time.perf_counter()
    with weave(user_id=42) as w:

        @w.do
        def profile(user_id):  # a sync function: runs in a worker thread
            time.sleep(0.5)
            return {"id": user_id, "name": "Ada"}

        @w.do
        async def orders(user_id):  # an async function: runs on the event loop
            await asyncio.sleep(0.5)
            return [101, 102, 103]

        @w.do
        def recommendations(user_id):
            time.sleep(0.5)
            return ["tea", "scones"]

        @w.do  # starts as soon as the three tasks it names are done
        def page(profile, orders, recommendations):
            return f"{profile['name']}: {len(orders)} orders, {len(recommendations)} tips"

    wall = time.perf_counter() - start
    slow = ("profile", "orders", "recommendations")
    total = sum(w.result.timings[name] for name in slow)
    print(f"w.result.final  = {w.result.final!r}")
    print(f"sum of the three task times: {total:.2f} s")
    print(f"wall time of the whole block: {wall:.2f} s")


def mapping_and_plan() -> None:
    section("2. A mapped task, the execution plan (debug=True) and timings")
    with weave(order_ids=[101, 102, 103, 104], debug=True) as w:

        @w.do("order_ids", workers=2)  # once per order id, at most 2 at a time
        async def totals(order_id):
            await asyncio.sleep(0.05 * (105 - order_id))  # later ids finish first
            return order_id * 1.5

        @w.do
        def customer():
            time.sleep(0.1)
            return "Ada"

        @w.do
        def invoice(customer, totals):
            return {"customer": customer, "totals": totals, "sum": sum(totals)}

    print(f"totals, in input order: {w.result.totals}")
    print(f"invoice: {w.result.invoice}")
    print("dependency tiers:", w.execution_plan["tiers"])
    print("timings:")
    for name, seconds in w.result.timings.items():
        print(f"  {name:<10} {seconds * 1000:7.1f} ms")


def errors() -> None:
    section("3. A failing task: its own exception, with a note saying where")
    caught = None
    try:
        with weave(card="4242") as w:

            @w.do
            def account(card):
                return {"card": card, "balance": 10}

            @w.do
            async def receipt_pdf():
                await asyncio.sleep(5)  # still running when `charge` fails: cancelled
                return b"%PDF"

            @w.do
            def charge(account):
                raise ValueError(f"insufficient funds on card {account['card']}")

    except ValueError as error:  # the task's own exception, not a wrapper
        caught = error
        print(f"caught {type(error).__name__}: {error}")
        for note in error.__notes__:
            print(f"  note: {note}")
    print(f"finished results stay readable: w.result.account = {w.result.account}")
    print(f"w.result.cancelled = {sorted(w.result.cancelled)}")
    print(f"w.result.exception is the caught object: {w.result.exception is caught}")


def main() -> None:
    start = time.perf_counter()
    concurrency()
    mapping_and_plan()
    errors()
    print(f"\ndemo finished in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
