"""Resumable, verified HTTP downloads with the standard library (KITTI archives, weights).

:func:`download` streams a URL into ``<dest>.part`` and moves it onto ``dest`` only once the
transfer is complete and, when a sha256 (or a prefix of one) is given, verified; nothing
incomplete or unverified ever sits at ``dest``. A ``.part`` file left by an earlier,
interrupted run or by a failed attempt is resumed with an HTTP ``Range`` request.

Failures fall into three kinds:

- transient (connection reset or cut before ``Content-Length`` bytes arrived, timeouts,
  :class:`http.client.IncompleteRead`, HTTP 5xx, 408 and 429): retried with exponential
  backoff, each retry resuming from the bytes already on disk;
- permanent (any other HTTP 4xx, an invalid URL, a sha256 mismatch): raised at once;
- offline (connection refused or name resolution failing on the very first attempt): retried
  at most once, quickly, so that a machine without network fails within seconds with a hint
  on how to provide the file by hand.

Every failure surfaces as a :class:`DownloadError` whose message is one line naming the URL.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from detrprune import __version__

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20
_OFFLINE_MAX_BACKOFF = 0.5
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SHA256_PREFIX_RE = re.compile(r"[0-9a-f]{8,64}")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE_RE = re.compile(r"bytes\s+\*/(\d+)")
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}
# Client errors that say "try again later" rather than "this will never work".
_RETRYABLE_4XX = {408, 429}


class DownloadError(RuntimeError):
    """A download that failed for good; the message is one line naming the URL."""


class _Transient(Exception):
    """A failed attempt worth retrying; ``connect`` when the server could not be reached."""

    def __init__(self, reason: str, *, connect: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connect = connect


def _one_line(text: object) -> str:
    """``text`` as a single line (exception texts may span several)."""
    return " ".join(str(text).split())


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_connect_failure(reason: object) -> bool:
    """Whether a connection error means the host cannot be reached at all (refused, no DNS)."""
    if isinstance(reason, (ConnectionRefusedError, socket.gaierror)):
        return True
    return isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS


def _http_error(url: str, exc: urllib.error.HTTPError, part: Path, have: int) -> None:
    """Turn an HTTP error status into a transient failure, a permanent one, or a complete part.

    Returns normally only for a 416 on a ``.part`` that already holds the whole file.
    """
    code = exc.code
    reason = _one_line(exc.reason)
    content_range = exc.headers.get("Content-Range", "") if exc.headers else ""
    exc.close()
    if code == 416 and have > 0:
        match = _UNSATISFIED_RANGE_RE.fullmatch(content_range.strip())
        if match and int(match.group(1)) == have:
            log.info("%s: server says the %d bytes of %s are the whole file", url, have, part.name)
            return
        # The part is larger than the file, or its size cannot be checked: start again.
        log.warning("%s: HTTP 416 for bytes=%d-; discarding %s", url, have, part.name)
        part.unlink(missing_ok=True)
        raise _Transient(f"HTTP 416 {reason} for a resume at byte {have}")
    if code >= 500 or code in _RETRYABLE_4XX:
        raise _Transient(f"HTTP {code} {reason}")
    raise DownloadError(f"{url}: HTTP {code} {reason}")


def _open(url: str, have: int, timeout: float) -> http.client.HTTPResponse:
    """Send the GET (a ``Range`` request when ``have`` bytes are already on disk)."""
    headers = {"User-Agent": f"detrprune/{__version__}"}
    if have > 0:
        headers["Range"] = f"bytes={have}-"
    try:
        request = urllib.request.Request(url, headers=headers)
    except ValueError as exc:
        raise DownloadError(f"{url}: invalid URL ({_one_line(exc)})") from exc
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except urllib.error.URLError as exc:
        if not isinstance(exc.reason, OSError):
            # e.g. "unknown url type": no retry will change that.
            raise DownloadError(f"{url}: {_one_line(exc.reason)}") from exc
        raise _Transient(_one_line(exc.reason), connect=_is_connect_failure(exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:
        # Raised while reading the status line: the connection was made, then dropped.
        raise _Transient(_one_line(exc) or type(exc).__name__) from exc


def _attempt(url: str, part: Path, *, timeout: float, chunk_size: int) -> None:
    """One request, appending to (or restarting) ``part``; returns once it holds the whole file.

    Raises :class:`_Transient` for failures worth retrying and :class:`DownloadError` otherwise.
    """
    have = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, have, timeout)
    except urllib.error.HTTPError as exc:
        _http_error(url, exc, part, have)
        return
    with response:
        status = response.status
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if status == 206:
            content_range = response.headers.get("Content-Range", "")
            match = _CONTENT_RANGE_RE.fullmatch(content_range.strip())
            if match is None or int(match.group(1)) != have:
                # Appending bytes from another offset would corrupt the file.
                log.warning(
                    "%s: asked for bytes=%d-, got Content-Range %r; discarding %s",
                    url,
                    have,
                    content_range,
                    part.name,
                )
                part.unlink(missing_ok=True)
                raise _Transient(f"unexpected Content-Range {content_range!r}")
            start, end, size = match.groups()
            expected = int(end) - int(start) + 1
            total = None if size == "*" else int(size)
            mode = "ab"
        else:
            if have > 0:
                log.info("%s: server ignored the Range request; restarting from zero", url)
            have = 0
            expected = length
            total = length
            mode = "wb"
        received = 0
        with (
            open(part, mode) as handle,
            tqdm(
                total=total,
                initial=have,
                desc=part.name.removesuffix(".part"),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                mininterval=5,
            ) as bar,
        ):
            while True:
                try:
                    # read1: one socket read per call, so a timeout loses no received bytes
                    # (read() discards a partly filled chunk when the socket times out).
                    chunk = response.read1(chunk_size)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(
                        f"transfer failed after {have + received} bytes "
                        f"({_one_line(exc) or type(exc).__name__})"
                    ) from exc
                if not chunk:
                    break
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    # urllib returns b"" instead of raising when the server closes early; check the count.
    if expected is not None and received < expected:
        raise _Transient(f"connection closed after {have + received} of {have + expected} bytes")


def download(
    url: str,
    dest: Path | str,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
    alternative: str | None = None,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, resuming and retrying, and verify it against ``sha256``.

    Args:
        url: the file to fetch (http or https).
        dest: where the complete file ends up; ``<dest>.part`` holds it while in transit.
        sha256: the expected hex digest; when ``None`` the digest is logged so it can be pinned.
        sha256_prefix: when no ``sha256`` is given, the first hex digits the digest must start
            with (at least 8), as model zoos put them in file names (``resnet50-0676ba61.pth``).
        retries: how many times a transient failure is retried (an offline machine: at most 1).
        timeout: socket timeout in seconds, for connecting and for each read.
        backoff: the n-th retry (from 0) waits ``backoff * 2**n`` seconds.
        alternative: what the user can do instead when there is no network, appended to the
            "cannot connect" message after "Download the file elsewhere and".
        chunk_size: the most bytes taken from the socket per read.

    Returns:
        ``dest``, complete (and verified when ``sha256`` is given).

    Raises:
        DownloadError: on a permanent failure, once retries are exhausted, or on a sha256
            mismatch (the ``.part`` file is then deleted). Nothing is left at ``dest``.
    """
    dest = Path(dest)
    expected = None
    if sha256 is not None:
        expected = sha256.strip().lower()
        if not _SHA256_RE.fullmatch(expected):
            raise ValueError(f"not a hex sha256 digest: {sha256!r}")
    elif sha256_prefix is not None:
        expected = sha256_prefix.strip().lower()
        if not _SHA256_PREFIX_RE.fullmatch(expected):
            raise ValueError(f"not a prefix of 8-64 hex digits of a sha256: {sha256_prefix!r}")
    # How the expected value is named in messages: a full digest, or the start of one.
    what = "sha256" if sha256 is not None else "sha256 prefix"
    shown = expected if sha256 is not None else f"a digest starting with {expected}"
    if dest.exists():
        if expected is None:
            log.info("%s: already present (no sha256 to check)", dest)
            return dest
        actual = sha256_file(dest)
        if actual.startswith(expected):
            log.info("%s: already present, %s ok", dest, what)
            return dest
        raise DownloadError(
            f"{url}: {dest} already exists with sha256 {actual}, expected {shown}; "
            "delete it to download again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    budget = retries
    retried = 0
    while True:
        try:
            _attempt(url, part, timeout=timeout, chunk_size=chunk_size)
            break
        except _Transient as exc:
            offline = exc.connect and retried == 0
            if offline:
                # Nothing answered at all: most likely no network. Fail fast with a hint rather
                # than spending a minute of backoff on retries that cannot succeed.
                budget = min(retries, 1)
            if retried >= budget:
                if exc.connect:
                    message = f"{url}: cannot connect ({exc.reason}); offline?"
                    if alternative:
                        message += f" Download the file elsewhere and {alternative}"
                    raise DownloadError(message) from exc
                raise DownloadError(
                    f"{url}: {exc.reason} (gave up after {retried} retries)"
                ) from exc
            delay = backoff * 2**retried
            if offline:
                delay = min(delay, _OFFLINE_MAX_BACKOFF)
            retried += 1
            log.warning("%s: %s; retry %d/%d in %.2g s", url, exc.reason, retried, budget, delay)
            time.sleep(delay)

    if expected is not None:
        actual = sha256_file(part)
        # A full digest is its own prefix: one comparison serves both.
        if not actual.startswith(expected):
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: sha256 mismatch: expected {shown}, got {actual}")
        log.info("%s: %s ok (%s)", dest.name, what, actual)
    else:
        log.info("%s: sha256 %s (not verified: pin it in the config)", dest.name, sha256_file(part))
    os.replace(part, dest)
    log.info("%s: downloaded to %s (%d retries)", url, dest, retried)
    return dest
