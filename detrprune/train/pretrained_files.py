"""Where ``model.init``'s files come from: a local path, or a URL fetched into ``checkpoints/``.

A value of ``model.init.backbone`` / ``model.init.detector`` that starts with ``http://`` or
``https://`` names a file to download; the workflow's ``download_weights`` rule fetches it to
``checkpoints/<its file name>`` before the baseline trains, and every other step reads that
local copy. Anything else is a local path, used as it is (nothing is downloaded).

A download is verified before it is moved into place: against ``model.init.sha256.<key>`` when
that is pinned, else against the sha256 prefix that OpenMMLab and torchvision put in their file
names (``...-acc8a5ff.pth``, ``resnet50-0676ba61.pth``; ``torch.hub`` checks the same prefix).
A URL with neither cannot be verified and is refused by the config check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from detrprune.data.download import download

CHECKPOINT_DIR = Path("checkpoints")
INIT_KEYS = ("backbone", "detector")
_URL_SCHEMES = ("http", "https")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# torch.hub's convention: the hex digits after the last "-" of the name, before its suffix.
_NAME_HASH_RE = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def is_url(value: str) -> bool:
    """Whether a ``model.init`` value names a file to download rather than a local path."""
    return bool(_SCHEME_RE.match(value))


def url_file_name(url: str) -> str:
    """The last segment of the URL's path: the name of the local copy under ``checkpoints/``."""
    return unquote(urlsplit(url).path).rsplit("/", 1)[-1]


def local_path(value: str) -> Path:
    """The file the training reads for a ``model.init`` value: the value itself for a path,
    ``checkpoints/<file name>`` for a URL."""
    return CHECKPOINT_DIR / url_file_name(value) if is_url(value) else Path(value)


def name_hash_prefix(name: str) -> str | None:
    """The sha256 prefix a model-zoo file name carries (``resnet50-0676ba61.pth`` ->
    ``0676ba61``), or ``None``."""
    match = _NAME_HASH_RE.search(name)
    return match.group(1) if match else None


def url_problem(url: str, pinned: str | None) -> str | None:
    """Why ``url`` cannot be a ``model.init`` download (one phrase), or ``None`` if it can."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in _URL_SCHEMES:
        return f"only http and https URLs are downloaded, not {parts.scheme}://"
    if not parts.netloc:
        return "the URL names no host"
    name = url_file_name(url)
    if not _SAFE_NAME_RE.match(name):
        return (
            f"its file name {name!r} cannot be a file under {CHECKPOINT_DIR}/ (the URL must "
            "end in a plain file name)"
        )
    if pinned is None and name_hash_prefix(name) is None:
        return (
            "nothing to verify the download against: pin its sha256 in model.init.sha256, or "
            "use a file name that ends in a sha256 prefix (name-<8 or more hex digits>.pth)"
        )
    return None


def init_files(init: Mapping[str, Any] | None) -> list[Path]:
    """The files ``model.init`` names, downloaded ones at their local copy (inputs of the
    baseline's training)."""
    return [local_path(init[k]) for k in INIT_KEYS if init and init.get(k)]


def downloads(init: Mapping[str, Any]) -> dict[str, str]:
    """``{local file name: URL}`` of the files ``model.init`` names by URL."""
    return {
        url_file_name(init[key]): init[key]
        for key in INIT_KEYS
        if isinstance(init.get(key), str) and is_url(init[key])
    }


def init_params(init: Mapping[str, Any]) -> dict[str, Any]:
    """``model.init`` as the training rules' params carry it: each file at its local path, no
    sha256 pins. Each file's content is an input of the baseline's training; neither the URL it
    came from nor a pin changes it, so replacing a URL by its local copy, or pinning a sha256
    after the download, reruns nothing. A config without URLs and pins keeps its value."""
    return {
        key: (
            {name: None for name in value}
            if key == "sha256"
            else None
            if value is None
            else str(local_path(value))
        )
        for key, value in init.items()
    }


def fetch(url: str, dest: Path | str, init: Mapping[str, Any]) -> Path:
    """Download ``url`` (one of ``init``'s) to ``dest``, resuming and retrying, verified against
    its pinned sha256 or its file name's prefix; raises :class:`DownloadError` otherwise."""
    keys = [key for key in INIT_KEYS if init.get(key) == url]
    if not keys:
        raise ValueError(f"{url} is not one of model.init's files")
    pinned = (init.get("sha256") or {}).get(keys[0])
    return download(
        url,
        dest,
        sha256=pinned,
        sha256_prefix=None if pinned else name_hash_prefix(url_file_name(url)),
        alternative=f"put it at {dest} (the workflow then downloads nothing)",
    )
