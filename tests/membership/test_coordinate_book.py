"""The coordinate book's refresh budget: a fixed number of reads per round, every member in turn."""

from __future__ import annotations

from hypercore.membership.coordinates import CoordinateBook
from hypercore.membership.rpc_types import Coordinate


def coord(x: float) -> Coordinate:
    return Coordinate(vec=[x] + [0.0] * 7, error=0.1, adjustment=0.0, height=0.0)


def test_each_round_reads_k_members_and_a_full_pass_takes_n_over_k_rounds() -> None:
    book = CoordinateBook()
    names = {f"n{i:02d}" for i in range(20)}
    seen: list[list[str]] = []
    for _ in range(3):
        batch = book.stalest(names, 8)
        seen.append(batch)
        for name in batch:
            book.set(name, coord(1.0))
    assert [len(b) for b in seen] == [8, 8, 8]
    assert set(seen[0]) | set(seen[1]) | set(seen[2]) == names  # 20 members in 3 rounds of 8
    assert set(seen[0]).isdisjoint(seen[1])
    # The fourth round reads those read longest ago: none of the third round's.
    assert set(book.stalest(names, 8)).isdisjoint(seen[2])


def test_a_member_never_read_comes_first_and_a_departed_one_is_forgotten() -> None:
    book = CoordinateBook()
    names = {"a", "b", "c"}
    for name in book.stalest(names, 3):
        book.set(name, coord(2.0))
    assert book.stalest(names | {"new"}, 1) == ["new"]
    book.forget_except({"a"})
    assert "b" not in book and "a" in book
    assert book.stalest({"a", "b"}, 1) == ["b"]  # forgotten: as good as never read
