"""service.atomic: a reader sees the old file or the new one, never half; a failed write leaves
no temporary file and names the path."""

from __future__ import annotations

import os
import stat

import pytest

from service.atomic import write_atomic, write_bytes_atomic


def test_a_write_replaces_the_file_whole_readable_by_others(tmp_path):
    path = tmp_path / "new" / "f.json"  # the folder is made
    write_bytes_atomic(path, b"one")
    write_bytes_atomic(path, b"two")
    assert path.read_bytes() == b"two" and os.listdir(path.parent) == ["f.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    write_bytes_atomic(path, b"old")

    def half(f):
        f.write(b"ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as err:
        write_atomic(path, half)
    assert err.value.filename == str(path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
