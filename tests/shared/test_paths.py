from pathlib import Path

import pytest

from shared.paths import write_text_atomic


def test_write_text_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "summary.json"
    path.write_text("old\n")
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_write_text_atomic_keeps_the_old_file_when_the_write_fails(tmp_path: Path):
    path = tmp_path / "summary.json"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        write_text_atomic(path, b"not text")  # type: ignore[arg-type]
    assert path.read_text() == "old\n"  # the reader never sees a half-written or empty summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
