"""Temporaries stranded by a killed job (SIGKILL runs no cleanup) are removed by the next job
that writes the same output, and only those: a live writer's temporary and other outputs'
files stay."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detrprune.data.archive import extract_kitti, safe_extract_zip
from detrprune.data.synthetic import synthesize_kitti
from detrprune.jobs import atomic_output, write_json


def _dead_pid() -> int:
    """A process id that no process holds now."""
    for pid in range(99999, 4_194_304):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise RuntimeError("no free pid")


def _removal_logs(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "stale" in r.msg
    )


def test_atomic_output_removes_a_killed_writers_temporaries(tmp_path: Path, caplog):
    out = tmp_path / "model.pth"
    dead = _dead_pid()
    stale = tmp_path / f".model.pth.{dead}.tmp"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".model.pth.{os.getppid()}.tmp"  # a live writer's: not ours to remove
    live.write_bytes(b"y")
    other = tmp_path / f".model.pth.bak.{dead}.tmp"  # the temporary of another output
    other.write_bytes(b"z")
    with caplog.at_level(logging.INFO, logger="detrprune"), atomic_output(out) as (tmp,):
        tmp.write_text("new")
    assert out.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.pth", live.name, other.name]
    )
    removed = _removal_logs(caplog)
    assert stale.name in removed and "1000 bytes" in removed
    assert live.name not in removed


def test_write_json_removes_stale_temporaries(tmp_path: Path):
    out = tmp_path / "metrics.json"
    (tmp_path / f".metrics.json.{_dead_pid()}.tmp").write_text("{half")
    write_json({"a": 1}, out)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.fixture(scope="module")
def kitti_zips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return synthesize_kitti(tmp_path_factory.mktemp("raw"), 2, seed=0)


def _plant(folder: Path, size: int) -> Path:
    folder.mkdir()
    (folder / "training" / "image_2").mkdir(parents=True)
    (folder / "training" / "image_2" / "000000.png").write_bytes(b"p" * size)
    return folder


def test_extraction_removes_a_killed_extractions_folders(kitti_zips, tmp_path: Path, caplog):
    out = tmp_path / "kitti"
    _plant(tmp_path / ".kitti.extract-abc", 300)
    _plant(tmp_path / ".kitti.old-k2j4n_x0", 200)
    _plant(tmp_path / f".kitti.extract-{_dead_pid()}-a1b2c3d4", 100)
    live = _plant(tmp_path / f".kitti.extract-{os.getppid()}-a1b2c3d4", 10)
    other = _plant(tmp_path / ".kitti2.extract-abc", 10)  # another destination's
    with caplog.at_level(logging.INFO, logger="detrprune"):
        stats = extract_kitti(*kitti_zips, out)
    assert stats["images"] == stats["labels"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["kitti", live.name, other.name])
    removed = _removal_logs(caplog)
    assert ".kitti.extract-abc" in removed and ".kitti.old-k2j4n_x0" in removed
    assert re.search(r"\b600 bytes", removed), removed
    assert live.name not in removed


def test_safe_extract_zip_removes_a_killed_extractions_folders(kitti_zips, tmp_path: Path):
    _plant(tmp_path / ".labels.extract-zzz", 5)
    safe_extract_zip(kitti_zips[1], tmp_path / "labels")
    assert [p.name for p in tmp_path.iterdir()] == ["labels"]


_KILL = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"


def _killed(code: str) -> None:
    """Run ``code`` in a fresh interpreter; it ends with a SIGKILL, so no cleanup runs."""
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == -9, run.stderr


def test_a_real_kill_inside_atomic_output_is_cleaned_up_by_the_next_writer(tmp_path: Path):
    out = tmp_path / "model.pth"
    _killed(
        f"""
        from detrprune.jobs import atomic_output
        with atomic_output({str(out)!r}) as (tmp,):
            tmp.write_bytes(b"half")
            {_KILL}
        """
    )
    (stranded,) = tmp_path.iterdir()
    assert re.fullmatch(r"\.model\.pth\.\d+\.tmp", stranded.name)
    with atomic_output(out) as (tmp,):
        tmp.write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]
    assert out.read_text() == "whole"


def test_a_real_kill_during_extraction_is_cleaned_up_by_the_next_one(kitti_zips, tmp_path: Path):
    out = tmp_path / "kitti"
    _killed(
        f"""
        from pathlib import Path
        from detrprune.data.archive import _staging_dir
        (_staging_dir(Path({str(out)!r})) / "part.png").write_bytes(b"p" * 100)
        {_KILL}
        """
    )
    (stranded,) = tmp_path.iterdir()
    assert stranded.name.startswith(".kitti.extract-")
    extract_kitti(*kitti_zips, out)
    assert [p.name for p in tmp_path.iterdir()] == ["kitti"]
