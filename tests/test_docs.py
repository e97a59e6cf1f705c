"""Citations resolve: every "spec X.Y" in the repository's code and documents names a heading of docs/SPEC.md,
every docs/ path exists, and nothing refers to an issue tracker the reader cannot see."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".toml", ".txt"}
SKIP_DIRS = {".git", ".venv", "output", "__pycache__", ".pytest_cache", ".ruff_cache"}

# "spec 5.4", "(spec 2.3)", "spec 1.3-15" (step 15 of 1.3), "spec 6", "spec 5.2, 5.3", "spec 7.4/7.5",
# "spec 1.4 / 5.3", "docs/SPEC.md sections 1.1, 4.1", "spec section 5".
SECTION = r"\d+(?:\.\d+)?(?:-\d+)?"
CITATION = re.compile(rf"\bspec(?:\.md)?(?:\s+sections?)?\s+({SECTION}(?:\s*(?:,|/|and)\s*{SECTION})*)",
                      re.IGNORECASE)
DOCS_PATH = re.compile(r"\bdocs/[\w./-]*\w")
ISSUE = re.compile(r"\bissues?\s*#?\s*\d+", re.IGNORECASE)
HEADING = re.compile(r"^#{1,4}\s+(\d+(?:\.\d+)?)[.\s]", re.MULTILINE)


def repository_files():
    """The repository's text files (not the datasets under data/<Dataset>/, not outputs or the venv)."""
    for path in sorted(REPO.rglob("*")):
        relative = path.relative_to(REPO)
        if set(relative.parts) & SKIP_DIRS or not path.is_file():
            continue
        if relative.parts[0] == "data" and len(relative.parts) > 2:  # data/<Dataset>/...: downloaded files
            continue
        if path.suffix in SUFFIXES or path.name == "Makefile":
            yield relative, path.read_text(errors="replace")


def spec_headings():
    return set(HEADING.findall((REPO / "docs" / "SPEC.md").read_text()))


def cited_sections(text):
    """(line number, section) for every section number a spec citation names; 'X.Y-N' names section X.Y."""
    for match in CITATION.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        for section in re.split(r"\s*(?:,|/|and)\s*", match.group(1)):
            yield line, section.split("-")[0]


def test_the_citation_pattern_reads_every_form_in_use():
    text = ("(spec 2.3) spec 5.4: spec 1.3-15 spec 6) spec 5.2, 5.3). Spec 7.4/7.5 spec 1.4 / 5.3 "
            "docs/SPEC.md sections 1.1, 4.1, 8. spec section 5 spec 5.3: 0.1")
    assert [s for _, s in cited_sections(text)] == ["2.3", "5.4", "1.3", "6", "5.2", "5.3", "7.4", "7.5", "1.4",
                                                   "5.3", "1.1", "4.1", "8", "5", "5.3"]
    assert {"0", "1.3", "5.4", "7.9", "7.25", "8"} <= spec_headings()


def test_every_spec_citation_resolves_to_a_heading():
    headings = spec_headings()
    unresolved = [f"{relative}:{line}: spec {section}" for relative, text in repository_files()
                  for line, section in cited_sections(text) if section not in headings]
    assert not unresolved, "citations without a heading in docs/SPEC.md:\n" + "\n".join(unresolved)


def test_every_docs_path_exists():
    missing = [f"{relative}: {match.group(0)}" for relative, text in repository_files()
               for match in DOCS_PATH.finditer(text) if not (REPO / match.group(0)).exists()]
    assert not missing, "docs/ paths that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("name", ["SPEC.md", "DATA.md", "GLOSSARY.md"])
def test_the_documents_ship(name):
    assert (REPO / "docs" / name).is_file()


def test_no_reference_to_an_issue_tracker():
    found = [f"{relative}: {match.group(0)}" for relative, text in repository_files()
             for match in ISSUE.finditer(text)]
    assert not found, "comments must state the reason, not an issue number:\n" + "\n".join(found)
