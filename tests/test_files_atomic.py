import os

import pytest

import llamaforge.files as atomic
from llamaforge.files import write_text_atomic


def test_writes_with_mode_and_replaces(tmp_path):
    p = write_text_atomic(tmp_path / "a" / "f.txt", "one")
    assert p.read_text() == "one" and oct(p.stat().st_mode & 0o777) == "0o644"
    write_text_atomic(p, "two", mode=0o755)
    assert p.read_text() == "two" and oct(p.stat().st_mode & 0o777) == "0o755"


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    p = write_text_atomic(tmp_path / "f.txt", "old")

    def fail(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError):
        write_text_atomic(p, "new")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]
