"""saliency_trust.io: atomic writes."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from saliency_trust.io import atomic_path, write_csv


def test_atomic_write_gives_the_file_the_umask_mode_not_a_private_one(tmp_path):
    old = os.umask(0o022)
    try:
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
        with atomic_path(tmp_path / "f.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for name in ("t.csv", "f.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_failed_atomic_write_leaves_neither_file_nor_temporary(tmp_path):
    (tmp_path / "keep.csv").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "keep.csv") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "keep.csv").read_text() == "old" and os.listdir(tmp_path) == ["keep.csv"]
