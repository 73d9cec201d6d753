"""The resumable, verified download (detrprune.data.download) against a real local server."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from detrprune.data.download import DownloadError, download, sha256_file

from .http_server import FileServer, serve

FRAMES = Path(__file__).resolve().parent / "data/kitti_sample/training/image_2"
CHUNK = 64 * 1024
ALTERNATIVE = "point kitti.archives_dir at the folder holding it"
# Small retries and backoff so that every failure path runs in well under a second.
FAST = {"retries": 2, "timeout": 3.0, "backoff": 0.01, "chunk_size": CHUNK}


@pytest.fixture(scope="module")
def archive() -> bytes:
    """A real zip of the six KITTI sample frames (~4.7 MB, stored uncompressed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for png in sorted(FRAMES.glob("*.png")):
            zf.write(png, f"training/image_2/{png.name}")
    data = buffer.getvalue()
    assert len(data) > 2_000_000
    return data


@pytest.fixture
def server(archive: bytes) -> Iterator[FileServer]:
    with serve({"/data_object_image_2.zip": archive}) as srv:
        yield srv


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="detrprune.data.download")
    return caplog


def _retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


URL_PATH = "/data_object_image_2.zip"


def test_full_download(server: FileServer, archive: bytes, tmp_path: Path):
    dest = tmp_path / "raw" / "data_object_image_2.zip"
    assert download(server.url(URL_PATH), dest, sha256=_sha(archive), **FAST) == dest
    assert dest.read_bytes() == archive
    assert sha256_file(dest) == _sha(archive)
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]
    assert server.requests == [(URL_PATH, None)]
    with zipfile.ZipFile(dest) as zf:
        assert zf.testzip() is None


def test_cut_transfer_is_resumed_with_range(
    server: FileServer, archive: bytes, tmp_path: Path, log_records
):
    cut = 1_000_003  # not a multiple of the chunk size
    server.cut_after = cut
    dest = tmp_path / "a.zip"
    download(server.url(URL_PATH), dest, sha256=_sha(archive), **FAST)
    assert server.requests == [(URL_PATH, None), (URL_PATH, f"bytes={cut}-")]
    assert dest.read_bytes() == archive
    assert not dest.with_name("a.zip.part").exists()
    (retry,) = _retries(log_records)
    assert f"connection closed after {cut} of {len(archive)} bytes" in retry


def test_stalled_transfer_times_out_and_is_resumed(
    server: FileServer, archive: bytes, tmp_path: Path, log_records
):
    stalled = 2_000_001
    server.stall_after = stalled
    dest = tmp_path / "a.zip"
    download(server.url(URL_PATH), dest, sha256=_sha(archive), **{**FAST, "timeout": 0.3})
    assert server.requests == [(URL_PATH, None), (URL_PATH, f"bytes={stalled}-")]
    assert dest.read_bytes() == archive
    (retry,) = _retries(log_records)
    assert f"transfer failed after {stalled} bytes" in retry


def test_leftover_part_is_resumed(server: FileServer, archive: bytes, tmp_path: Path):
    dest = tmp_path / "a.zip"
    kept = 1_234_567
    dest.with_name("a.zip.part").write_bytes(archive[:kept])
    download(server.url(URL_PATH), dest, sha256=_sha(archive), **FAST)
    assert server.requests == [(URL_PATH, f"bytes={kept}-")]
    assert dest.read_bytes() == archive
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_leftover_complete_part_gets_416_and_is_used(
    server: FileServer, archive: bytes, tmp_path: Path
):
    dest = tmp_path / "a.zip"
    dest.with_name("a.zip.part").write_bytes(archive)
    download(server.url(URL_PATH), dest, sha256=_sha(archive), **FAST)
    assert server.requests == [(URL_PATH, f"bytes={len(archive)}-")]
    assert dest.read_bytes() == archive
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_ignored_range_restarts_from_zero(
    server: FileServer, archive: bytes, tmp_path: Path, log_records
):
    server.ignore_range = True
    dest = tmp_path / "a.zip"
    kept = 777_777
    dest.with_name("a.zip.part").write_bytes(archive[:kept])
    download(server.url(URL_PATH), dest, sha256=_sha(archive), **FAST)
    assert server.requests == [(URL_PATH, f"bytes={kept}-")]
    # Appending the full body to the kept bytes would have made a longer, wrong file.
    assert dest.read_bytes() == archive
    assert any("ignored the Range request" in r.getMessage() for r in log_records.records)
    assert not _retries(log_records)


def test_transient_503_is_retried(server: FileServer, archive: bytes, tmp_path: Path, log_records):
    server.fail_times = 2
    dest = tmp_path / "a.zip"
    download(server.url(URL_PATH), dest, sha256=_sha(archive), **FAST)
    assert dest.read_bytes() == archive
    assert len(server.requests) == 3
    retries = _retries(log_records)
    assert len(retries) == 2
    assert all("HTTP 503 Service Unavailable" in message for message in retries)
    assert "retry 2/2" in retries[1]


def test_503_beyond_the_retries_fails(server: FileServer, tmp_path: Path):
    server.fail_times = 10
    url = server.url(URL_PATH)
    dest = tmp_path / "a.zip"
    with pytest.raises(DownloadError) as info:
        download(url, dest, **FAST)
    assert str(info.value) == f"{url}: HTTP 503 Service Unavailable (gave up after 2 retries)"
    assert len(server.requests) == 3
    assert not dest.exists()


def test_sha256_mismatch(server: FileServer, archive: bytes, tmp_path: Path):
    url = server.url(URL_PATH)
    dest = tmp_path / "a.zip"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download(url, dest, sha256=wrong, **FAST)
    assert str(info.value) == f"{url}: sha256 mismatch: expected {wrong}, got {_sha(archive)}"
    assert list(tmp_path.iterdir()) == []


def test_404_is_not_retried(server: FileServer, tmp_path: Path):
    url = server.url("/missing.zip")
    dest = tmp_path / "a.zip"
    with pytest.raises(DownloadError) as info:
        download(url, dest, **FAST)
    assert str(info.value) == f"{url}: HTTP 404 Not Found"
    assert server.requests == [("/missing.zip", None)]
    assert list(tmp_path.iterdir()) == []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_fails_fast(tmp_path: Path, log_records):
    url = f"http://127.0.0.1:{_free_port()}/data_object_image_2.zip"
    dest = tmp_path / "a.zip"
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        # The default retries and backoff: being offline must still fail within seconds.
        download(url, dest, alternative=ALTERNATIVE)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert re.fullmatch(
        re.escape(url)
        + r": cannot connect \(.*refused.*\); offline\? Download the file elsewhere and "
        + re.escape(ALTERNATIVE),
        message,
    ), message
    assert "\n" not in message
    assert len(_retries(log_records)) == 1
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_without_alternative(tmp_path: Path):
    url = f"http://127.0.0.1:{_free_port()}/a.zip"
    with pytest.raises(DownloadError, match=r"cannot connect \(.*\); offline\?$"):
        download(url, tmp_path / "a.zip", **FAST)


def test_present_dest_with_matching_sha256_makes_no_request(
    server: FileServer, archive: bytes, tmp_path: Path, log_records
):
    dest = tmp_path / "a.zip"
    dest.write_bytes(archive)
    assert download(server.url(URL_PATH), dest, sha256=_sha(archive), **FAST) == dest
    assert server.requests == []
    assert any("already present, sha256 ok" in r.getMessage() for r in log_records.records)


def test_present_dest_with_wrong_sha256_is_refused(
    server: FileServer, archive: bytes, tmp_path: Path
):
    dest = tmp_path / "a.zip"
    dest.write_bytes(b"not the archive")
    url = server.url(URL_PATH)
    with pytest.raises(DownloadError, match=r"already exists with sha256 [0-9a-f]{64}, expected"):
        download(url, dest, sha256=_sha(archive), **FAST)
    assert server.requests == []
    assert dest.read_bytes() == b"not the archive"


def test_without_sha256_the_digest_is_logged(
    server: FileServer, archive: bytes, tmp_path: Path, log_records
):
    dest = tmp_path / "a.zip"
    download(server.url(URL_PATH), str(dest), **FAST)
    assert dest.read_bytes() == archive
    assert any(_sha(archive) in r.getMessage() for r in log_records.records)
