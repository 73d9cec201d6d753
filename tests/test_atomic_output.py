"""The one atomic-write helper every step uses for its outputs."""

from __future__ import annotations

import stat

import pytest

from detrprune.jobs import atomic_output


def test_all_outputs_appear_together_with_a_normal_mode(tmp_path):
    first, second = tmp_path / "a" / "train.json", tmp_path / "a" / "val.json"
    with atomic_output(first, second) as (tmp_first, tmp_second):
        tmp_first.write_text("1")
        tmp_second.write_text("2")
        assert not first.exists() and not second.exists()
    assert (first.read_text(), second.read_text()) == ("1", "2")
    assert sorted(p.name for p in first.parent.iterdir()) == ["train.json", "val.json"]
    assert stat.S_IMODE(first.stat().st_mode) & 0o044  # readable by others, unlike mkstemp's


def test_a_failure_leaves_nothing_and_keeps_the_previous_output(tmp_path):
    out = tmp_path / "summary.csv"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out, tmp_path / "other.csv") as temporaries:
        temporaries[0].write_text("half")
        raise RuntimeError("step failed")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]
