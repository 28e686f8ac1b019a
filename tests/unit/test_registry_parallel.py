"""registry._parallel.each_on_threads: every item once, a connection per thread, closed;
the first failure stops the rest and is raised."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.registry._parallel import each_on_threads


class Conn:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.closed = False
        self.thread = threading.current_thread().name


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(), max_size=20), st.integers(1, 5))
def test_every_item_once_on_its_own_connections(items: list[int], jobs: int) -> None:
    lock = threading.Lock()
    done: list[int] = []
    conns: list[Conn] = []

    def connect() -> Conn:
        conn = Conn([])
        with lock:
            conns.append(conn)
        return conn

    def do(conn: Conn, item: int) -> None:
        assert conn.thread == threading.current_thread().name  # never shared
        with lock:
            done.append(item)

    def close(conn: Conn) -> None:
        conn.closed = True

    each_on_threads(items, jobs, "t", connect=connect, do=do, close=close)
    assert sorted(done) == sorted(items)
    assert len(conns) <= min(jobs, len(items))
    assert all(c.closed for c in conns)


def test_the_first_failure_stops_the_rest_and_is_raised() -> None:
    done: list[int] = []
    started = threading.Event()

    def do(conn: None, item: int) -> None:
        if item == 0:
            raise ValueError("item 0 failed")
        started.wait(1)
        done.append(item)

    with pytest.raises(ValueError, match="item 0 failed"):
        each_on_threads(list(range(100)), 1, "t", connect=lambda: None, do=do,
                        close=lambda conn: None)
    assert done == []  # one thread: after item 0 failed it took no more
