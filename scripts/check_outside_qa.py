"""Check the outside corpora's questions against the documents `scripts/outside-corpora.sh` fetched.

For every answerable question of `data/outside/<name>/qa.jsonl`, the source document is loaded with
ragtune's own loader (`ingest.loaders.load_document`, so exactly the text ingest will index) and the
reference answer must occur in it verbatim (whitespace normalised): the eval scores "reference
contained in the answer", so a reference the documents do not contain could never be scored right.
Unanswerable questions are listed for a reader to judge; nothing here can prove an absence.

Usage: python scripts/check_outside_qa.py [CORPORA_DIR]   (default workspace/outside); exit 1 on a miss.
"""

from __future__ import annotations

import sys
from pathlib import Path

from evaluation.data import QAItem, load_qa
from ingest.loaders import load_document

REPO = Path(__file__).resolve().parent.parent
QA_DIR = REPO / "data" / "outside"


def _flat(text: str) -> str:
    """Whitespace runs (newlines, tabs, non-breaking spaces) as one space."""
    return " ".join(text.split())


def check_corpus(qa_path: Path, docs: Path) -> list[str]:
    """The problems of one corpus's questions: missing source files, references not in their text."""
    problems: list[str] = []
    texts: dict[str, str] = {}
    items: list[QAItem] = load_qa(qa_path)
    for item in items:
        if not item.answerable:
            print(f"  unanswerable, line {item.line}: {item.question}")
            continue
        sources = [item.source] if isinstance(item.source, str) else list(item.source or [])
        found = False
        for source in sources:
            path = docs / source
            if not path.is_file():
                problems.append(f"{qa_path} line {item.line}: source {source!r} is not in {docs}")
                continue
            if source not in texts:
                texts[source] = _flat(load_document(path).text)
            found = found or _flat(item.answer or "") in texts[source]
        if sources and not found:
            problems.append(f"{qa_path} line {item.line}: reference {item.answer!r} is not in "
                            f"{', '.join(sources)}")
    answerable = sum(1 for i in items if i.answerable)
    print(f"  {answerable} answerable, {len(items) - answerable} unanswerable, "
          f"{len(texts)} documents read")
    return problems


def main(argv: list[str]) -> int:
    corpora = Path(argv[1]) if len(argv) > 1 else REPO / "workspace" / "outside"
    problems: list[str] = []
    for qa_path in sorted(QA_DIR.glob("*/qa.jsonl")):
        docs = corpora / qa_path.parent.name / "docs"
        print(f"{qa_path.parent.name}: {qa_path} against {docs}")
        if not docs.is_dir():
            problems.append(f"{docs} is missing: run scripts/outside-corpora.sh {corpora}")
            continue
        problems.extend(check_corpus(qa_path, docs))
    for problem in problems:
        print("FAIL", problem, file=sys.stderr)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
