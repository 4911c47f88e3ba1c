"""``freeze_startup_heap``: what exists when it is called is out of the collector's reach, what is
allocated later is not, and cyclic garbage made later is still collected."""

from __future__ import annotations

import gc

from leaderboard.common.heap import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_start_up_objects_are_frozen_and_later_garbage_is_still_collected() -> None:
    gc.unfreeze()
    try:
        built = Node()
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert not any(o is built for o in gc.get_objects())  # frozen: never scanned again
        later = Node()
        assert any(o is later for o in gc.get_objects())  # allocated after: still tracked
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle only the collector can free
        del a, b
        assert gc.collect() >= 2
    finally:
        gc.unfreeze()
