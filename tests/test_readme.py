"""The README stays a front door: short, and a way into every page of docs/."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_the_readme_is_at_most_12_kb():
    assert len(README.read_bytes()) <= 12_000


def test_every_docs_page_is_linked_from_the_readme():
    text = README.read_text()
    unlinked = [
        page.name
        for page in sorted((ROOT / "docs").glob("*.md"))
        if f"(docs/{page.name}" not in text
    ]
    assert unlinked == []
