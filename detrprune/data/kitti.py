"""Strict parser and writer for KITTI 2D object label files (``training/label_2/*.txt``).

One line per object, 15 whitespace-separated fields (16 in result files, the last being the
detection score)::

    type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]

The parser refuses anything it does not understand instead of guessing: a wrong field count,
a number that does not parse, an unknown type, an occlusion level outside {0, 1, 2, 3}, a
truncation outside [0, 1] or an inverted box all raise :class:`KittiLabelError` naming the
file and line. ``DontCare`` regions use KITTI's sentinels (``-1`` for truncated and occluded,
``-10`` for the angles, ``-1``/``-1000`` for the 3D fields), which are accepted for that type
only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

KITTI_TYPES: tuple[str, ...] = (
    "Car",
    "Van",
    "Truck",
    "Pedestrian",
    "Person_sitting",
    "Cyclist",
    "Tram",
    "Misc",
    "DontCare",
)

_NUM_FIELDS = 15
_NUM_FIELDS_WITH_SCORE = 16
_FIELD_NAMES = (
    "type",
    "truncated",
    "occluded",
    "alpha",
    "x1",
    "y1",
    "x2",
    "y2",
    "h",
    "w",
    "l",
    "x",
    "y",
    "z",
    "rotation_y",
    "score",
)


class KittiLabelError(ValueError):
    """A KITTI label line or file that does not follow the format."""


@dataclass(frozen=True)
class KittiObject:
    """One object of a KITTI label file.

    Attributes:
        type: One of :data:`KITTI_TYPES`.
        truncated: Fraction of the object leaving the image, in [0, 1] (-1 for DontCare).
        occluded: 0 fully visible, 1 partly occluded, 2 largely occluded, 3 unknown
            (-1 for DontCare).
        alpha: Observation angle in radians, [-pi, pi].
        bbox: 2D box ``(x1, y1, x2, y2)`` in pixel coordinates of the left colour image.
        dimensions: 3D size ``(h, w, l)`` in metres.
        location: Bottom centre of the 3D box ``(x, y, z)`` in camera coordinates, metres.
        rotation_y: Rotation around the camera's Y axis in radians, [-pi, pi].
        score: Detection confidence (result files only), else None.
    """

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]
    dimensions: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float
    score: float | None = None

    @property
    def height(self) -> float:
        """Box height in pixels (``y2 - y1``), the quantity KITTI's difficulty levels use."""
        return self.bbox[3] - self.bbox[1]


def _parse_float(token: str, field: str, where: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise KittiLabelError(f"{where}: field {field!r} is not a number: {token!r}") from None
    # float() accepts "nan" and "inf", which no KITTI field can hold.
    if not math.isfinite(value):
        raise KittiLabelError(f"{where}: field {field!r} is not finite: {token!r}")
    return value


def parse_label_line(line: str, where: str) -> KittiObject:
    """Parse one KITTI label line.

    Args:
        line: The text of the line (surrounding whitespace is ignored).
        where: Location used in error messages, ``"path:lineno"``.

    Returns:
        The parsed object.

    Raises:
        KittiLabelError: ``"{where}: <what is wrong>"`` when the line does not follow the format.
    """
    fields = line.split()
    if len(fields) not in (_NUM_FIELDS, _NUM_FIELDS_WITH_SCORE):
        raise KittiLabelError(
            f"{where}: expected {_NUM_FIELDS} fields ({_NUM_FIELDS_WITH_SCORE} with a score), "
            f"got {len(fields)}"
        )
    obj_type = fields[0]
    if obj_type not in KITTI_TYPES:
        raise KittiLabelError(
            f"{where}: unknown object type {obj_type!r} (expected one of {', '.join(KITTI_TYPES)})"
        )
    values = [
        _parse_float(token, name, where)
        for token, name in zip(fields[1:], _FIELD_NAMES[1:], strict=False)
    ]
    truncated, occluded_f, alpha, x1, y1, x2, y2, h, w, length, x, y, z, rotation_y = values[:14]
    score = values[14] if len(values) == 15 else None
    dont_care = obj_type == "DontCare"

    if occluded_f != int(occluded_f):
        raise KittiLabelError(f"{where}: occluded must be an integer, got {fields[2]!r}")
    occluded = int(occluded_f)
    allowed_occluded = {0, 1, 2, 3} | ({-1} if dont_care else set())
    if occluded not in allowed_occluded:
        raise KittiLabelError(
            f"{where}: occluded must be one of {sorted(allowed_occluded)} for {obj_type}, "
            f"got {occluded}"
        )
    if not (0.0 <= truncated <= 1.0 or (dont_care and truncated == -1.0)):
        raise KittiLabelError(
            f"{where}: truncated must lie in [0, 1] for {obj_type}, got {fields[1]!r}"
        )
    if x2 < x1:
        raise KittiLabelError(f"{where}: box x2 < x1 ({x2} < {x1})")
    if y2 < y1:
        raise KittiLabelError(f"{where}: box y2 < y1 ({y2} < {y1})")
    return KittiObject(
        type=obj_type,
        truncated=truncated,
        occluded=occluded,
        alpha=alpha,
        bbox=(x1, y1, x2, y2),
        dimensions=(h, w, length),
        location=(x, y, z),
        rotation_y=rotation_y,
        score=score,
    )


def parse_label_file(path: Path | str) -> list[KittiObject]:
    """Parse a whole KITTI label file.

    Blank lines are skipped; an empty file is valid (a frame without objects) and gives ``[]``.

    Raises:
        KittiLabelError: On the first malformed line, naming ``path:lineno``; also when the
            file is not valid UTF-8.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise KittiLabelError(f"{path}: not a UTF-8 text file ({err.reason})") from None
    objects = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            objects.append(parse_label_line(line, f"{path}:{lineno}"))
    return objects


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def _fmt_sentinel(value: float) -> str:
    # The benchmark writes DontCare's placeholder values as bare integers ("-1", "-10", "-1000").
    if value == int(value):
        return str(int(value))
    return _fmt(value)


def format_label_line(obj: KittiObject) -> str:
    """Format an object as a KITTI label line (no trailing newline).

    Follows the benchmark's own formatting: truncated and every real-valued field with two
    decimals, occluded as an integer; a DontCare region's placeholder values as bare integers
    (``DontCare -1 -1 -10 x1 y1 x2 y2 -1 -1 -1 -1000 -1000 -1000 -10``). A score, when present,
    is written with four decimals so that close detections keep their ranking. The result
    parses back with :func:`parse_label_line` to the same values up to that rounding.
    """
    other = _fmt_sentinel if obj.type == "DontCare" else _fmt
    parts = [
        obj.type,
        other(obj.truncated),
        str(int(obj.occluded)),
        other(obj.alpha),
        *(_fmt(v) for v in obj.bbox),
        *(other(v) for v in obj.dimensions),
        *(other(v) for v in obj.location),
        other(obj.rotation_y),
    ]
    if obj.score is not None:
        parts.append(f"{obj.score:.4f}")
    return " ".join(parts)
