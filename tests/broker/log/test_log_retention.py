"""Retention decisions, checked exhaustively against a brute-force statement of the rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from strom.broker.log import SegmentStats, segments_to_delete

segments_st = st.lists(
    st.builds(
        SegmentStats,
        base_offset=st.just(0),
        size_bytes=st.integers(0, 100),
        largest_timestamp_ms=st.integers(0, 100),
    ),
    max_size=8,
)
limit_st = st.integers(-1, 400)


def _oracle(segs: list[SegmentStats], now: int, retention_ms: int, retention_bytes: int) -> int:
    """The largest n < len(segs) such that every one of the first n segments is expired, or
    removing the first n still leaves at least retention_bytes."""
    best = 0
    total = sum(s.size_bytes for s in segs)
    for n in range(len(segs)):
        prefix = segs[:n]
        expired = retention_ms >= 0 and all(
            now - s.largest_timestamp_ms > retention_ms for s in prefix
        )
        removed = sum(s.size_bytes for s in prefix)
        oversize = retention_bytes >= 0 and total - removed >= retention_bytes
        if expired or oversize:
            best = n
    return best


@settings(max_examples=2000, deadline=None)
@given(segs=segments_st, now=st.integers(0, 300), retention_ms=limit_st, retention_bytes=limit_st)
def test_matches_oracle(
    segs: list[SegmentStats], now: int, retention_ms: int, retention_bytes: int
) -> None:
    n = segments_to_delete(segs, now, retention_ms, retention_bytes)
    assert n == _oracle(segs, now, retention_ms, retention_bytes)
    assert 0 <= n <= max(len(segs) - 1, 0)  # never the active segment
    # Applying retention again to what is left deletes nothing more by size.
    rest = segs[n:]
    if retention_ms < 0:
        assert segments_to_delete(rest, now, retention_ms, retention_bytes) == 0


def test_examples() -> None:
    segs = [SegmentStats(i * 10, 100, ts) for i, ts in enumerate([10, 20, 30, 40])]
    assert segments_to_delete(segs, 1000, -1, -1) == 0
    assert segments_to_delete(segs, 45, 20, -1) == 2  # 10 and 20 are older than 20 ms
    assert segments_to_delete(segs, 1000, 0, -1) == 3  # everything but the active segment
    assert segments_to_delete(segs, 0, -1, 250) == 1  # keep at least 250 bytes
    assert segments_to_delete(segs, 0, -1, 0) == 3
    # A not-yet-expired segment shields the expired ones after it (deletion is a prefix).
    shielded = [SegmentStats(0, 1, 50), SegmentStats(1, 1, 0), SegmentStats(2, 1, 0)]
    assert segments_to_delete(shielded, 60, 30, -1) == 0
    assert segments_to_delete([], 0, 0, 0) == 0
    assert segments_to_delete(segs[:1], 10**9, 0, 0) == 0
