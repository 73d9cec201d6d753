"""Every cross-reference a reader can follow resolves: relative Markdown links and their
``#anchor``, ``docs/…`` paths named in comments, and ``README "Section"`` references, in the
README, the docs, the configs, the Makefile, the workflow and the package."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from .conftest import REPO

# Where a reader meets references: the product's text, not the tests (whose fixtures may hold
# deliberately broken ones).
SOURCES = sorted(
    {
        *REPO.glob("*.md"),
        *REPO.glob("docs/**/*.md"),
        *REPO.glob("bench/**/*.md"),
        *REPO.glob("profiles/**/*.md"),
        *REPO.glob("report/**/*.rst"),
        *REPO.glob("config*.yaml"),
        *REPO.glob("configs/*.yaml"),
        *REPO.glob("schemas/*.yaml"),
        REPO / "Makefile",
        REPO / "Snakefile",
        *REPO.glob("rules/*.smk"),
        *REPO.glob("detrprune/**/*.py"),
        *REPO.glob("scripts/*.py"),
        *REPO.glob("bench/*.py"),
    }
)

MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOC_PATH = re.compile(r"(?<![\w/.-])((?:docs|bench)/[\w./-]+\.md)(#[\w-]+)?")
README_SECTION = re.compile(r"README(?:'s|\.md)?\s+\"([^\"]+)\"")
FENCE = re.compile(r"^(```|~~~)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, Markdown code and link marks dropped,
    punctuation other than ``-`` and ``_`` removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = text.replace("`", "").lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in ("L", "N"))
    return kept.replace(" ", "-")


def headings(markdown: Path) -> list[str]:
    """The Markdown headings of ``markdown`` (outside fenced code)."""
    found, fenced = [], False
    for line in markdown.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            found.append(match.group(1))
    return found


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of ``markdown``'s headings, repeated ones numbered ``-1``, ``-2``…"""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(markdown):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        out.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return out


def _shown(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def _broken_target(target: Path, anchor: str | None) -> str | None:
    if not target.exists():
        return f"{_shown(target)}: no such file"
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return f"{_shown(target)}#{anchor}: no such section"
    return None


def broken_references(source: Path) -> list[str]:
    """Every reference in ``source`` that does not resolve, as ``file:line: what``."""
    problems = []
    readme_sections = {h.lower() for h in headings(REPO / "README.md")}
    fenced = False
    for number, line in enumerate(source.read_text().splitlines(), start=1):
        if source.suffix == ".md" and FENCE.match(line):
            fenced = not fenced
            continue
        where = f"{_shown(source)}:{number}"
        if source.suffix == ".md" and not fenced:
            for link in MARKDOWN_LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, mailto: …
                    continue
                path, _, anchor = link.partition("#")
                target = (source.parent / path).resolve() if path else source
                if problem := _broken_target(target, anchor or None):
                    problems.append(f"{where}: {problem}")
        for path, anchor in DOC_PATH.findall(line):
            if problem := _broken_target(REPO / path, anchor.lstrip("#") or None):
                problems.append(f"{where}: {problem}")
        for section in README_SECTION.findall(line):
            if section.lower() not in readme_sections:
                problems.append(f'{where}: README has no section "{section}"')
    # A path can be both a link's text and its target: say each problem once.
    return list(dict.fromkeys(problems))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_references_resolve(source: Path) -> None:
    assert broken_references(source) == []


def test_the_checker_sees_broken_references(tmp_path: Path) -> None:
    """A broken link, anchor, docs path and README section are each reported; good ones not."""
    (tmp_path / "methods.md").write_text("# Methods\n")
    (tmp_path / "README.md").write_text("# Top\n")
    doc = tmp_path / "probe.md"
    doc.write_text(
        "# A heading, with `code`\n"
        "[ok](methods.md) [ok](#a-heading-with-code) [ok](README.md#top)\n"
        "[bad](nowhere.md) [bad](methods.md#no-such-section) [bad](#missing)\n"
        'see docs/none.md and README "No Such Section"\n'
    )
    problems = broken_references(doc)
    assert len(problems) == 5, problems
    assert any("nowhere.md: no such file" in p for p in problems)
    assert any("methods.md#no-such-section" in p for p in problems)
    assert any("#missing: no such section" in p for p in problems)
    assert any("docs/none.md: no such file" in p for p in problems)
    assert any('"No Such Section"' in p for p in problems)


def test_github_slug() -> None:
    assert github_slug("2026-12-04: sampling points and contiguous sampling") == (
        "2026-12-04-sampling-points-and-contiguous-sampling"
    )
    assert github_slug("Which torch, which mmcv") == "which-torch-which-mmcv"
    assert github_slug("`round_to` and [links](x.md)") == "round_to-and-links"
