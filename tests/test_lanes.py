"""The publisher's window and lanes (edge_agent/lanes.py), without a broker or a thread."""

from __future__ import annotations

from edge_agent.lanes import Recent, Window
from edge_agent.outbox import PendingRow


class Queue:
    """Pending rows in memory, fetched the way outbox.fetch_pending does (the priority lane
    reads rows with prio > 0, the others the prio = 0 ones: disjoint)."""

    def __init__(self, n: int, prio: set[int] | None = None) -> None:
        self.rows = {i: PendingRow(i, "d", b"{}") for i in range(1, n + 1)}
        self.prio = prio or set()
        self.fetches = 0

    def add(self, n: int) -> None:
        self.rows[n] = PendingRow(n, "d", b"{}")

    def sent(self, ns: list[int]) -> None:
        for n in ns:
            del self.rows[n]

    def fetch(self, after: int, limit: int, upto: int | None, prio: bool) -> list[PendingRow]:
        self.fetches += 1
        ns = sorted(
            n
            for n in self.rows
            if n > after and (upto is None or n <= upto) and (n in self.prio) == prio
        )
        return [self.rows[n] for n in ns[:limit]]


def drain(w: Window) -> list[tuple[str, list[int]]]:
    """Take rows until the window is full or every lane is empty; one message per take."""
    out: list[tuple[str, list[int]]] = []
    mid = 100 + len(w.inflight)
    while (nxt := w.next_rows()) is not None:
        lane, rows = nxt
        if rows:
            mid += 1
            w.sent(mid, [r.n for r in rows], lane, 0.0)
            out.append((lane, [r.n for r in rows]))
    return out


def test_live_goes_before_backlog_and_backlog_fills_the_rest() -> None:
    q = Queue(10)
    w = Window(size=3, batch_max=4, fetch=q.fetch)
    w.restart(backlog_upto=6, carry=True)  # rows 1-6 backlog, 7-10 live
    assert drain(w) == [("live", [7, 8, 9, 10]), ("backlog", [1, 2, 3, 4]), ("backlog", [5, 6])]
    assert w.full() and w.next_rows() is None
    assert w.flying == set(range(1, 11))


def test_priority_rows_go_first_one_per_message() -> None:
    q = Queue(6, prio={4, 5})
    w = Window(size=10, batch_max=10, fetch=q.fetch)
    w.restart(backlog_upto=6, carry=True)
    got = drain(w)
    assert got[:2] == [("priority", [4]), ("priority", [5])]
    # the backlog lane reads only prio = 0 rows
    assert got[2:] == [("backlog", [1, 2, 3, 6])]


def test_resend_lane_is_lowest_and_skips_rows_in_flight() -> None:
    q = Queue(3)
    w = Window(size=10, batch_max=10, fetch=q.fetch)
    w.restart(backlog_upto=0, carry=True)  # all live
    w.resend([PendingRow(2, "d", b"{}"), PendingRow(50, "d", b"{}")])
    assert drain(w) == [("live", [1, 2, 3]), ("resend", [50])]


def test_ack_frees_room_and_new_live_rows_follow() -> None:
    q = Queue(2)
    w = Window(size=1, batch_max=10, fetch=q.fetch)
    w.restart(backlog_upto=0, carry=True)
    assert drain(w) == [("live", [1, 2])]
    q.add(3)
    assert w.next_rows() is None  # full
    flight = w.acked(101)
    assert flight is not None and flight.rows == [1, 2] and flight.lane == "live"
    q.sent([1, 2])
    assert w.acked(101) is None  # a duplicate PUBACK is ignored
    fetches = q.fetches
    assert drain(w) == []  # the live lane was read to its end: not read again ...
    assert q.fetches == fetches
    w.new_pass()  # ... until a commit says there is more
    assert drain(w) == [("live", [3])]
    assert w.flying == {3}


def test_carried_rows_are_not_fetched_again_until_the_backlog_pass_ends() -> None:
    q = Queue(4)
    w = Window(size=10, batch_max=10, fetch=q.fetch)
    w.restart(backlog_upto=4, carry=True)
    w.sent(7, [1, 2], "backlog", 0.0)  # in flight when the link dropped
    w.restart(backlog_upto=4, carry=True)  # reconnect: paho re-sends mid 7 itself
    w.acked(7)  # its PUBACK comes before the sent mark is committed
    assert drain(w) == [("backlog", [3, 4])]  # 1 and 2 not sent twice
    assert w.carried == set()  # the pass is over: cleared


def test_carrying_until_every_message_paho_re_sent_is_acked_or_expired() -> None:
    """The publisher sends nothing after paho's re-sends while ``carrying()`` (a broker that
    closes on one of them must find nothing unread, or its reset loses the PUBACK)."""
    w = Window(size=10, batch_max=10, fetch=Queue(6).fetch)
    w.restart(backlog_upto=6, carry=True)
    assert not w.carrying()  # a first connection carries nothing
    w.sent(7, [1, 2], "live", 0.0)
    w.sent(8, [3], "live", 0.0)
    assert not w.carrying()  # our own messages are not paho's re-sends
    w.restart(backlog_upto=6, carry=True)  # reconnect: paho re-sends mids 7 and 8
    assert w.carrying()
    w.acked(7, ok=False)  # a denial (0x87) is an answer too
    assert w.carrying()
    w.acked(8)
    assert not w.carrying()
    w.sent(9, [4], "live", 0.0)
    w.restart(backlog_upto=6, carry=True)
    assert w.carrying()
    assert w.expire(100.0, 30.0) == 1  # never answered: given up after the ack timeout
    assert not w.carrying()
    w.sent(10, [5], "live", 0.0)
    w.restart(backlog_upto=6, carry=False)  # a rewind: nothing is carried
    assert not w.carrying()


def test_expiry_drops_late_messages_and_rewind_fetches_them_again() -> None:
    q = Queue(3)
    w = Window(size=10, batch_max=2, fetch=q.fetch)
    w.restart(backlog_upto=3, carry=True)
    w.sent(1, [1, 2], "backlog", now := 100.0)
    w.sent(2, [3], "backlog", now + 20)
    assert w.next_expiry(30.0) == 130.0
    assert w.expire(129.0, 30.0) == 0
    assert w.expire(131.0, 30.0) == 1
    assert w.flying == {3} and list(w.inflight) == [2]
    w.restart(backlog_upto=3, carry=False)  # the rewind
    assert drain(w) == [("backlog", [1, 2])]


def test_recent_commits_decide_the_live_split() -> None:
    r = Recent(live_s=5.0)
    assert r.split(0.0, top=10) == 10  # nothing recent: all backlog
    r.record(100.0, first_n=8)
    r.record(101.0, first_n=9)
    assert r.split(102.0, top=10) == 7  # 8.. committed within 5 s: live
    assert r.split(105.5, top=10) == 8  # the commit of row 8 is now older than 5 s
    assert r.split(200.0, top=10) == 10


def test_priority_lane_found_empty_is_read_again_only_when_prio_rows_came() -> None:
    q = Queue(1)
    w = Window(size=10, batch_max=10, fetch=q.fetch)
    w.restart(backlog_upto=0, carry=True)
    assert drain(w) == [("live", [1])]
    q.add(2)
    q.prio.add(3)
    q.add(3)
    fetches = q.fetches
    w.new_pass(prio=False)  # a commit of readings only: the priority lane is not queried
    assert drain(w) == [("live", [2])]
    assert q.fetches == fetches + 1
    w.new_pass(prio=True)  # a commit with an exception event
    assert drain(w) == [("priority", [3])]


def _rows(first: int, n: int) -> list[PendingRow]:
    return [PendingRow(i, "h", b"{}") for i in range(first, first + n)]


def test_resend_holds_at_most_half_the_window_so_live_rows_find_a_slot() -> None:
    q = Queue(0)
    w = Window(size=4, batch_max=2, fetch=q.fetch)
    w.restart(backlog_upto=0, carry=True)
    w.resend(_rows(100, 10))  # five messages' worth
    assert drain(w) == [("resend", [100, 101]), ("resend", [102, 103])]
    assert not w.full() and w.resend_busy() == 2
    q.add(1)  # a live reading arrives: it gets one of the two free slots
    w.new_pass()
    assert drain(w) == [("live", [1])]
    w.acked(101)  # a resend message PUBACKed: the lane may send its next one
    w.new_pass()
    assert drain(w) == [("resend", [104, 105])]


def test_resend_done_after_every_message_of_the_chunk_acked_or_given_up() -> None:
    q = Queue(0)
    w = Window(size=10, batch_max=2, fetch=q.fetch)
    w.restart(backlog_upto=0, carry=True)
    results: list[tuple[str, bool]] = []
    w.resend(_rows(100, 3), lambda ok: results.append(("a", ok)))  # two messages
    w.resend(_rows(200, 1), lambda ok: results.append(("b", ok)))
    assert drain(w) == [("resend", [100, 101]), ("resend", [102]), ("resend", [200])]
    w.acked(101)  # (drain numbers messages 101, 102, 103)
    assert results == []  # the second message of chunk a is still in flight
    w.acked(102, ok=True)
    assert results == [("a", True)]
    assert w.expire(now=31.0, timeout=30.0) == 1  # chunk b's message: no PUBACK in time
    assert results == [("a", True), ("b", False)]


def test_resend_rejected_message_fails_its_chunk_and_empty_chunk_is_done() -> None:
    q = Queue(0)
    w = Window(size=10, batch_max=5, fetch=q.fetch)
    w.restart(backlog_upto=0, carry=True)
    results: list[bool] = []
    w.resend(_rows(100, 2), results.append)
    assert drain(w) == [("resend", [100, 101])]
    w.acked(101, ok=False)  # the broker refused it (reason code >= 0x80)
    w.resend([], results.append)
    assert results == [False, True]
