"""The node's list of temp outputs in flight, swept at the next start."""

from __future__ import annotations

from pathlib import Path

from ffdesk.engine.temp_journal import TempJournal


def test_a_crash_leaves_the_list_and_the_next_start_removes_the_files(tmp_path: Path) -> None:
    out = tmp_path / "out put"
    out.mkdir()
    part = out / ".clip ünï $x.7-12.part.mp4"
    part.write_bytes(b"half an encode")
    finished = out / ".other.8-13.part.mp4"
    journal = TempJournal(tmp_path / "data", "node/one")
    journal.add(part)
    journal.add(finished)
    journal.remove(finished)  # that run ended normally
    # The process dies here. A new one with the same identifier starts:
    again = TempJournal(tmp_path / "data", "node/one")
    assert again.sweep() == [part]
    assert not part.exists()
    assert again.sweep() == []  # the list was emptied


def test_other_node_identifiers_keep_their_own_lists(tmp_path: Path) -> None:
    part = tmp_path / ".x.1-1.part.mkv"
    part.write_bytes(b"x")
    TempJournal(tmp_path / "data", "a").add(part)
    assert TempJournal(tmp_path / "data", "b").sweep() == []
    assert part.exists()


def test_an_unreadable_journal_is_replaced_not_fatal(tmp_path: Path) -> None:
    journal = TempJournal(tmp_path, "n")
    journal.path.write_text("{not json")
    assert journal.sweep() == []
    assert journal.path.read_text() == "[]"
