"""Registry transfers on a few threads, each with a connection of its own (pull's layer
downloads, push's blob uploads)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
C = TypeVar("C")


def each_on_threads(items: Sequence[T], jobs: int, name: str, *, connect: Callable[[], C],
                    do: Callable[[C, T], None], close: Callable[[C], None]) -> None:
    """``do(conn, item)`` for every item, on up to ``jobs`` daemon threads; each thread
    makes its ``conn`` with ``connect`` before its first item and ``close``\\ s it at the
    end. The first failure stops the others (they take no more items) and is raised; so
    does an interrupt of the caller (^C) while it waits."""
    import threading

    lock = threading.Lock()
    todo = list(items)
    failures: list[BaseException] = []

    def worker() -> None:
        conn: C | None = None
        try:
            while True:
                with lock:
                    if not todo or failures:
                        return
                    item = todo.pop(0)
                if conn is None:
                    conn = connect()
                do(conn, item)
        except BaseException as err:
            with lock:
                failures.append(err)
        finally:
            if conn is not None:
                close(conn)

    threads = [threading.Thread(target=worker, name=f"{name}-{i}", daemon=True)
               for i in range(min(jobs, len(todo)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException as err:  # ^C: the workers take nothing more
        with lock:
            failures.append(err)
        raise
    if failures:
        raise failures[0]
