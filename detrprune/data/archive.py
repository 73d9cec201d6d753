"""Safe, all-or-nothing extraction of the KITTI 2D object archives.

:func:`safe_extract_zip` checks every entry of an archive before writing anything (no absolute
paths, no ``..``, nothing resolving outside the destination, no symbolic links) and extracts
into a temporary sibling folder that replaces the destination only once every entry has been
written and its CRC checked. A corrupt or truncated archive, or an unsafe entry, raises
:class:`ArchiveError` and leaves neither the destination nor stray files behind. A killed
extraction cannot clean up: the next extraction into the same destination removes the folders
it left (``.<dest>.extract-*``, ``.<dest>.old-*``) first.

:func:`extract_kitti` does the same for the image and label archives together, keeping only the
``training/`` split (the image archive also holds ``testing/``), checking that every label
file has its image and warning about images without a label file (the conversion drops them).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from detrprune.jobs import remove_stale

log = logging.getLogger(__name__)

TRAINING_PREFIX = "training/"
IMAGE_DIR = Path("training/image_2")
LABEL_DIR = Path("training/label_2")
_SHOWN_IDS = 5
_COPY_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive that is corrupt, unsafe to extract, or not shaped like the KITTI archives."""


def _check_entry(zip_path: Path, info: zipfile.ZipInfo, root: Path) -> None:
    """Refuse an entry that could write outside ``root`` (resolved) or create a link."""
    name = info.filename
    if not name or "\x00" in name:
        raise ArchiveError(f"{zip_path}: entry {name!r} has an empty or NUL-containing name")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"{zip_path}: entry {name!r} is an absolute path")
    if ".." in re.split(r"[\\/]", name):
        raise ArchiveError(f"{zip_path}: entry {name!r} contains '..'")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{zip_path}: entry {name!r} is a symbolic link")
    if not (root / name).resolve().is_relative_to(root):
        raise ArchiveError(f"{zip_path}: entry {name!r} resolves outside the destination")


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as err:
        raise ArchiveError(f"{zip_path}: not a readable zip archive ({err})") from None


def _extract_into(
    zip_path: Path, staging: Path, keep: Callable[[str], bool] | None = None
) -> tuple[list[Path], int]:
    """Extract the entries of ``zip_path`` accepted by ``keep`` into the existing ``staging``.

    Every entry is checked (even those not kept) before anything is written. CRCs are checked
    while reading each entry, so the archive is read once (``testzip`` would read it twice,
    which matters for the 12 GB image archive).

    Returns:
        The extracted files (paths inside ``staging``, archive order) and the number of file
        entries skipped because ``keep`` refused them.
    """
    files: list[Path] = []
    skipped = 0
    with _open_zip(zip_path) as zf:
        infos = zf.infolist()
        root = staging.resolve()
        seen: set[str] = set()
        for info in infos:
            _check_entry(zip_path, info, root)
            if info.filename in seen:
                raise ArchiveError(f"{zip_path}: entry {info.filename!r} appears twice")
            seen.add(info.filename)
        for info in infos:
            if keep is not None and not keep(info.filename):
                skipped += 0 if info.is_dir() else 1
                continue
            target = staging / info.filename
            try:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, _COPY_CHUNK)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
                raise ArchiveError(
                    f"{zip_path}: entry {info.filename!r} is corrupt ({err})"
                ) from None
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                # A file entry and a folder entry with the same path.
                raise ArchiveError(
                    f"{zip_path}: entry {info.filename!r} clashes with another entry's path"
                ) from None
            files.append(target)
    return files, skipped


def _temporary_prefix(dest: Path, kind: str) -> str:
    """``.<dest>.<kind>-<pid>-``: the pid tells a live extraction's folders from a killed one's."""
    return f".{dest.name}.{kind}-{os.getpid()}-"


def _stale_pattern(dest: Path) -> re.Pattern[str]:
    """Staging (``extract``) and replaced (``old``) folders of ``dest``; mkdtemp's random suffix
    (letters, digits, ``_``), after the pid of the process that made them (older names lack it).
    """
    return re.compile(rf"\.{re.escape(dest.name)}\.(?:extract|old)-(?:(?P<pid>\d+)-)?[a-z0-9_]+")


def _staging_dir(dest: Path) -> Path:
    """A fresh staging folder beside ``dest``, after removing those killed extractions left."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(dest.parent, _stale_pattern(dest), dest)
    staging = Path(tempfile.mkdtemp(prefix=_temporary_prefix(dest, "extract"), dir=dest.parent))
    staging.chmod(0o755)  # it becomes `dest`; mkdtemp's 0700 would make it private to the user
    return staging


def _replace_dir(staging: Path, dest: Path) -> None:
    """Move ``staging`` to ``dest``, replacing a previous ``dest`` only after the move worked."""
    # Two renames: a reader can see no `dest` for an instant, never a half-written one.
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=_temporary_prefix(dest, "old"), dir=dest.parent))
        old.rmdir()
        os.rename(dest, old)
    try:
        os.rename(staging, dest)
    except BaseException:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def safe_extract_zip(zip_path: Path, dest_dir: Path) -> list[Path]:
    """Extract a zip archive into ``dest_dir``, all or nothing.

    ``dest_dir`` is created; if it already exists it is replaced, and its previous content is
    removed only after the new extraction has succeeded.

    Returns:
        The extracted files, as paths under ``dest_dir``, in archive order.

    Raises:
        ArchiveError: Naming the archive (and the entry) when it is corrupt or truncated, or an
            entry is absolute, contains ``..``, resolves outside ``dest_dir`` or is a symbolic
            link. Nothing is left behind then.
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    staging = _staging_dir(dest_dir)
    try:
        files, _ = _extract_into(zip_path, staging)
        _replace_dir(staging, dest_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("extracted %d files from %s into %s", len(files), zip_path, dest_dir)
    return [dest_dir / f.relative_to(staging) for f in files]


def _is_training(name: str) -> bool:
    return name.startswith(TRAINING_PREFIX)


def _shown(ids: list[str]) -> str:
    return ", ".join(ids[:_SHOWN_IDS]) + (", ..." if len(ids) > _SHOWN_IDS else "")


def _stems(folder: Path, suffix: str) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.stem for p in folder.iterdir() if p.suffix == suffix and p.is_file()}


def extract_kitti(images_zip: Path, labels_zip: Path, out_dir: Path) -> dict[str, int]:
    """Extract the KITTI image and label archives into ``out_dir``.

    Keeps the ``training/`` entries only, so that ``out_dir/training/image_2/*.png`` and
    ``out_dir/training/label_2/*.txt`` exist; the other entries (the image archive's
    ``testing/`` split) are counted as skipped. A previous extraction in ``out_dir`` is replaced
    only when the new one has fully succeeded.

    Returns:
        ``{"images", "labels", "unlabelled_images", "skipped_entries"}``: PNG files in
        ``training/image_2``, label files in ``training/label_2``, images without a label file,
        and file entries outside ``training/`` that were not extracted.

    Raises:
        ArchiveError: On a corrupt or unsafe archive (see :func:`safe_extract_zip`), when no
            label file was found, or when label files have no image (the message gives how many
            and the first few frame ids).
    """
    images_zip, labels_zip, out_dir = Path(images_zip), Path(labels_zip), Path(out_dir)
    staging = _staging_dir(out_dir)
    try:
        _, skipped_images = _extract_into(images_zip, staging, keep=_is_training)
        _, skipped_labels = _extract_into(labels_zip, staging, keep=_is_training)
        images = _stems(staging / IMAGE_DIR, ".png")
        labels = _stems(staging / LABEL_DIR, ".txt")
        if not labels:
            raise ArchiveError(f"{labels_zip}: no label files under {LABEL_DIR.as_posix()}/")
        orphans = sorted(labels - images)
        if orphans:
            raise ArchiveError(
                f"{labels_zip}: {len(orphans)} label files have no image in {images_zip} "
                f"(first ids: {_shown(orphans)})"
            )
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    unlabelled = sorted(images - labels)
    stats = {
        "images": len(images),
        "labels": len(labels),
        "unlabelled_images": len(unlabelled),
        "skipped_entries": skipped_images + skipped_labels,
    }
    if unlabelled:
        log.warning(
            "%s: %d images have no label file; the conversion leaves them out (first ids: %s)",
            out_dir,
            len(unlabelled),
            _shown(unlabelled),
        )
    log.info(
        "extracted KITTI into %s: %d images, %d labels, %d images without a label, "
        "%d entries outside %s skipped",
        out_dir,
        stats["images"],
        stats["labels"],
        stats["unlabelled_images"],
        stats["skipped_entries"],
        TRAINING_PREFIX,
    )
    return stats
