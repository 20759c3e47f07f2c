"""The documentation: every relative link in README.md and docs/*.md resolves (the file, and
the #anchor to a heading of it, as GitHub names headings), and the front page stays short."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRONT_PAGE_MAX_LINES = 250
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:[^>]*\s)?(?:id|name)=\"([^\"]+)\"", re.I)


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked."""
    out, fence = [], None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            out.append("")
            continue
        out.append("" if fence else _INLINE_CODE.sub("", line))
    return out


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation dropped, lowercase, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = "".join(ch for ch in text.lower() if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    text = path.read_text(encoding="utf-8")
    for line in _prose_with_code_headings(text):
        m = _HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    out.update(_HTML_ANCHOR.findall(text))
    return out


def _prose_with_code_headings(text: str) -> list[str]:
    """Lines outside fenced code (headings keep their inline code, which GitHub slugs)."""
    out, fence = [], None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            continue
        if not fence:
            out.append(line)
    return out


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(_prose(path.read_text(encoding="utf-8")), 1):
        out += [(n, m.group(1)) for m in _LINK.finditer(line)]
        ref = _REF_DEF.match(line)
        if ref:
            out.append((n, ref.group(1)))
    return out


def _relative(target: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith("//")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for line, target in links(page):
        if not _relative(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = page if not file_part else (page.parent / unquote(file_part)).resolve()
        if not dest.exists():
            broken.append(f"{page.relative_to(ROOT)}:{line}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            broken.append(f"{page.relative_to(ROOT)}:{line}: {target} (no heading #{anchor} in {dest.name})")
        elif ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{page.relative_to(ROOT)}:{line}: {target} (outside the repository)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_front_page_is_short_and_keeps_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= FRONT_PAGE_MAX_LINES
    assert "## Two commands" in text
    assert "make quickstart" in text and "make test" in text
    # the front page names the command `make test` runs (and .ci/run runs `make test`)
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^test:[^\n]*\n\t\$\(BIN\)/python -m (pytest[^\n]*)$", make, re.M)
    assert recipe, "the Makefile's test target no longer runs pytest first"
    assert f"`{recipe.group(1)}`" in text, recipe.group(1)
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_link_checker_sees_broken_links(tmp_path):
    (tmp_path / "a.md").write_text("# Title: `x` and y\n\n## Same\n## Same\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#title-x-and-y) [dup](a.md#same-1) [bad](a.md#nope) [gone](c.md)\n"
                    "`[code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n[web](https://example.com)\n",
                    encoding="utf-8")
    assert anchors(tmp_path / "a.md") == {"title-x-and-y", "same", "same-1"}
    assert [t for _, t in links(page)] == ["a.md#title-x-and-y", "a.md#same-1", "a.md#nope", "c.md",
                                           "https://example.com"]
