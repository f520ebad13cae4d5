"""The read-only snapshot of a locked chdb directory while its owner merges parts, and
the event tables' columns against the event schema.

The owner removes merged-away parts while a reader copies the directory; a part that
vanished mid-copy must make the copy start again (a bounded number of times), not fail
the reader with "cannot snapshot store". The directory here mimics a MergeTree table's
parts, and the copy hook plays the merge that removes a part between listing and copy.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from bandit.errors import StoreError
from bandit.events import DecisionEvent, EngagementEvent, FeedbackEvent, field_names
from bandit.store import ClickHouseStore
from bandit.store.clickhouse import _snapshot_copy


def _store_dir(root: Path, parts: tuple[str, ...]) -> Path:
    table = root / "store" / "data" / "switchboard" / "decisions"
    for part in parts:
        (table / part).mkdir(parents=True)
        for name in ("columns.txt", "data.bin", "checksums.txt"):
            (table / part / name).write_text(f"{part}/{name}")
    (root / "store" / "status").write_text("lock")
    return root / "store"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_snapshot_copies_again_when_a_part_vanishes_mid_copy(tmp_path: Path) -> None:
    src = _store_dir(tmp_path, ("all_1_1_0", "all_2_2_0"))
    merged = src / "data" / "switchboard" / "decisions" / "all_1_2_1"
    calls: list[str] = []

    def merge_during_copy(s: str, d: str) -> object:
        calls.append(s)
        if len(calls) == 2:  # the owner merges both parts away between listing and copy
            parts = Path(s).parent.parent
            shutil.copytree(parts / "all_1_1_0", merged)
            shutil.rmtree(parts / "all_1_1_0")
            shutil.rmtree(parts / "all_2_2_0")
        return shutil.copy2(s, d)

    dest = _snapshot_copy(str(src), copy_function=merge_during_copy)
    try:
        copy = Path(dest) / "data"
        assert _files(copy) == _files(src) - {"status"}
        assert {p.name for p in (copy / "data" / "switchboard" / "decisions").iterdir()} == {
            "all_1_2_1"}
        assert len(calls) > 2  # the first copy failed and a second one ran
    finally:
        shutil.rmtree(dest)


def test_snapshot_gives_up_when_parts_keep_vanishing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = _store_dir(tmp_path, ("all_1_1_0",))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    generation = iter(range(1, 100))

    def merge_every_copy(s: str, d: str) -> object:
        part = Path(s).parent
        if part.name.startswith("all_") and part.exists():  # each copy sees a merge
            n = next(generation)
            shutil.copytree(part, part.parent / f"all_{n + 1}_{n + 1}_{n}")
            shutil.rmtree(part)
        return shutil.copy2(s, d)

    with pytest.raises(StoreError, match=r"cannot snapshot store at .*parts kept vanishing .*"
                                         r"\(3 attempts\)"):
        _snapshot_copy(str(src), copy_function=merge_every_copy, attempts=3)
    assert next(generation) == 4  # three attempts, no more
    assert list(scratch.iterdir()) == []  # the failed copies are removed


def test_snapshot_does_not_retry_an_unreadable_file(tmp_path: Path) -> None:
    src = _store_dir(tmp_path, ("all_1_1_0",))
    calls: list[str] = []

    def unreadable(s: str, d: str) -> object:
        calls.append(s)
        raise PermissionError(13, "Permission denied", s)

    with pytest.raises(StoreError, match=r"cannot snapshot store at .*Permission denied") as info:
        _snapshot_copy(str(src), copy_function=unreadable)
    assert "vanishing" not in str(info.value)
    assert len(calls) == 3  # one attempt: the three files of the one part, each refused


# ---------------------------------------------------------------------- event columns


def test_event_tables_hold_every_event_field_and_nothing_else(store: ClickHouseStore) -> None:
    """The insert columns come from ``bandit.events.field_names``: an event field added
    without a migration (or a column dropped) fails here, not at the first insert."""
    for table, cls in (("decisions", DecisionEvent), ("feedback", FeedbackEvent),
                       ("engagement", EngagementEvent)):
        rows = store._rows(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND "
            "table = {t:String} AND default_kind != 'MATERIALIZED' ORDER BY position",
            {"t": table})
        assert tuple(r[0] for r in rows) == tuple(
            n for n in field_names(cls) if n != "schema_version"), table
