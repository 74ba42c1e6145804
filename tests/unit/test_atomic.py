"""Atomic writes: readers see the old or the complete new file; permissions are those of a normal write."""

from __future__ import annotations

import os
import stat

import pytest

from stran.atomic import atomic_write_text, atomic_write_with


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_gets_the_umask_permissions_not_0600(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "card.md"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    assert mode(target) == 0o666 & ~umask


def test_an_existing_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")
    os.chmod(target, 0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
