"""The documentation holds together: every relative link of the README and of docs/ points to a
file that exists, the README links the generated pages, and those pages are the ones their
commands write (``fastpg reproduce --page``, ``python -m bench --page``), not hand-made copies."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, (page.name, broken)


def test_the_readme_is_the_users_page_and_links_the_generated_ones():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for page in ("docs/results.md", "docs/performance.md", "docs/experiments.md", "docs/kernels.md", "docs/design.md"):
        assert f"]({page}" in readme, page


def test_the_generated_pages_are_what_their_commands_write():
    from fastpg.paper.claims import claims_table

    results = (ROOT / "docs" / "results.md").read_text()
    assert results.startswith("# fastpg: the paper's claims, reproduced\n")  # the full settings, not --quick
    assert claims_table([]) in results  # the report's own table header (fastpg.paper.claims)
    assert "](results/" in results  # its figures, copied beside it
    performance = (ROOT / "docs" / "performance.md").read_text()
    assert performance.startswith("# fastpg: performance\n") and "Written by `python -m bench --page" in performance
    assert "`python -m bench`" in performance and "--quick" not in performance.split("\n\n")[3]  # a full run


def _cited_sections():
    """Every ``(docs/<page>.md, "Section", ...)`` the code cites, with where."""
    cite = re.compile(r'docs/(\w+)\.md,((?:\s*"[^"]+"[,;]?)+)')
    for path in sorted([*ROOT.glob("fastpg/**/*.py"), *ROOT.glob("cli/*.py"), *ROOT.glob("bench/*.py"),
                        *ROOT.glob("tests/*.py")]):
        text = re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text())  # a citation may wrap, in a comment too
        for page, sections in cite.findall(text):
            for section in re.findall(r'"([^"]+)"', sections):
                yield path.relative_to(ROOT), page, section


def test_every_section_the_code_cites_exists():
    headings = {}
    for page in (ROOT / "docs").glob("*.md"):
        lines = page.read_text().splitlines()
        # a section is a heading, or a paragraph or list item led by a bold title ("- **Estimates** (...)")
        headings[page.stem] = {line.lstrip("#").strip().lower() for line in lines if line.startswith("#")} | {
            m.strip(" .`").lower() for line in lines for m in re.findall(r"^(?:- )?\*\*([^*]+)\*\*", line)}
    cited = list(_cited_sections())
    assert len(cited) > 50
    missing = [(str(path), page, section) for path, page, section in cited
               if section.lower() not in headings.get(page, set())]
    assert not missing, missing
