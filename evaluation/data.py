"""Eval questions (`qa.jsonl`) and the leak check against the training datasets.

An eval question that the model was trained on measures memory, not skill: before any model
is loaded, every eval question is compared (normalised, exact and near match) with the user
turns of every dataset registered in the workspace's `dataset_info.json` and of the datasets
the evaluated runs trained on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ragtune.datasets import (DatasetSpec, detect_spec, examples_from_rows, read_dataset_info,
                               read_rows)
from ragtune.errors import DatasetError, InputError, RagtuneError
from ragtune.prompts import is_chinese
from ingest.pairs.config import PairsConfig
from ingest.pairs.text import normalise, shingles

log = logging.getLogger(__name__)

_QUESTION_MARKERS = ("Question:", "问题：", "问题:")


@dataclass(frozen=True)
class QAItem:
    """One eval question; `answer` None means the documents do not answer it."""

    line: int
    question: str
    answer: str | None
    source: str | list[str] | None
    page: int | None = None  # the page of `source` that holds the answer (PDFs and scans)

    @property
    def answerable(self) -> bool:
        return self.answer is not None

    @property
    def lang(self) -> str:
        return "zh" if is_chinese(self.question) else "en"


def _check_source(path: Path, line: int, value: object) -> str | list[str] | None:
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return value
    raise InputError(path, f"must be a file path, a list of paths or null, not {value!r}",
                     row=line, field="source")


def _parse_line(path: Path, line: int, text: str) -> QAItem:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg})", row=line) from None
    if not isinstance(row, dict):
        raise InputError(path, "each line must be a JSON object", row=line)
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InputError(path, "missing or empty", row=line, field="question")
    answer = row.get("answer")
    if answer is not None and (not isinstance(answer, str) or not answer.strip()):
        raise InputError(path, "must be a non-empty string, or null when unanswerable",
                         row=line, field="answer")
    page = row.get("page")
    if page is not None and (not isinstance(page, int) or isinstance(page, bool) or page < 1):
        raise InputError(path, "must be a page number (1 or more), or left out", row=line,
                         field="page")
    return QAItem(line, question.strip(), answer.strip() if answer else None,
                  _check_source(path, line, row.get("source")), page)


def load_qa(path: Path, limit: int | None = None) -> list[QAItem]:
    """Read `{"question", "answer", "source"}` lines; errors name the line and field."""
    if not path.is_file():
        raise InputError(path, "eval question file not found",
                         hint="pass --qa PATH to a qa.jsonl file")
    items: list[QAItem] = []
    with path.open(encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            if text.strip():
                items.append(_parse_line(path, line, text))
    if not items:
        raise InputError(path, "no questions in the file")
    return items[:limit] if limit else items


# ---------------------------------------------------------------- leak check


@dataclass(frozen=True)
class TrainingQuestion:
    """The user turn of one training row, located by file and 1-based row."""

    dataset: str
    path: Path
    row: int
    text: str


@dataclass(frozen=True)
class Collision:
    """An eval question found in the training data."""

    item: QAItem
    found: TrainingQuestion
    kind: str  # "exact" or "near match, Jaccard 0.93"


class EvalLeakError(RagtuneError):
    """Eval questions appear in the training data, so the eval would measure memorisation."""

    exit_code = 4

    def __init__(self, qa_path: Path, collisions: list[Collision]) -> None:
        self.collisions = collisions
        lines = [f"{len(collisions)} eval question(s) of {qa_path} are in the training data; "
                 "remove them from the eval set or the training set and retrain:"]
        for c in collisions[:20]:
            lines.append(f"  {qa_path} line {c.item.line} {c.item.question[:60]!r} == "
                         f"{c.found.path} row {c.found.row} (dataset {c.found.dataset!r}, "
                         f"{c.kind})")
        if len(collisions) > 20:
            lines.append(f"  ... and {len(collisions) - 20} more")
        super().__init__("\n".join(lines))


def _user_turns(spec: DatasetSpec, path: Path, row: int, data: object) -> list[str]:
    """The user turns of one training row, read by the dataset reader (bad rows: none)."""
    try:
        example = examples_from_rows(spec, path, [(row, data)])[0]
    except DatasetError as err:
        log.warning("leak check skips %s", err)
        return []
    return [m["content"] for m in example.messages if m["role"] == "user"]


def _candidates(text: str) -> list[str]:
    """The question of a user turn: after the last "Question:" marker of a context prompt
    (the shared layout), else the whole turn."""
    for marker in _QUESTION_MARKERS:
        if marker in text:
            return [text.rsplit(marker, 1)[1]]
    return [text]


@dataclass(frozen=True)
class DatasetRef:
    """A training dataset file and how to read it."""

    name: str
    path: Path
    spec: DatasetSpec


def registered_datasets(datasets_dir: Path) -> list[DatasetRef]:
    """The datasets registered in `<datasets_dir>/dataset_info.json` (none when it is absent)."""
    if not (datasets_dir / "dataset_info.json").is_file():
        return []
    refs = []
    for name, spec in read_dataset_info(datasets_dir).items():
        path = Path(spec.file_name)
        refs.append(DatasetRef(name, path if path.is_absolute() else datasets_dir / path, spec))
    return refs


def run_datasets(run_dir: Path, default_dir: Path) -> list[DatasetRef]:
    """The datasets a run trained on, as its `run_config.yaml` names them."""
    import yaml

    config_path = run_dir / "run_config.yaml"
    if not config_path.is_file():
        return []
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    ddir = Path(config.get("dataset_dir") or default_dir)
    registered = {r.name: r for r in registered_datasets(ddir)}
    refs = []
    for name in str(config.get("dataset") or "").split(","):
        name = name.strip()
        if name in registered:
            refs.append(registered[name])
        elif name.endswith((".json", ".jsonl")) or "/" in name:
            path = Path(name) if Path(name).exists() else ddir / name
            if path.is_file():
                refs.append(DatasetRef(name, path, detect_spec(path, read_rows(path))))
        elif name:
            log.warning("run %s: dataset %r not found in %s; not leak-checked", run_dir.name,
                        name, ddir)
    return refs


def training_questions(refs: list[DatasetRef]) -> Iterator[TrainingQuestion]:
    """Every user turn of every dataset file (each file read once)."""
    seen: set[Path] = set()
    for ref in refs:
        if ref.path.resolve() in seen:
            continue
        seen.add(ref.path.resolve())
        if not ref.path.exists():
            log.warning("dataset %s: %s is missing; skipped in the leak check", ref.name, ref.path)
            continue
        for row, data in read_rows(ref.path):
            for turn in _user_turns(ref.spec, ref.path, row, data):
                for cand in _candidates(turn):
                    yield TrainingQuestion(ref.name, ref.path, row, cand)


def _near_threshold() -> float:
    """The pair generator's near-duplicate threshold, so both sides apply one rule."""
    field = next(f for f in dataclasses.fields(PairsConfig) if f.name == "near_dup_threshold")
    return float(field.default)


def find_leaks(items: list[QAItem], refs: list[DatasetRef]) -> list[Collision]:
    """Eval questions equal or near-equal to a training user turn.

    The rule is the pair generator's eval-leak gate (ingest.pairs): equal after normalisation
    (case, punctuation, spaces), or character-shingle Jaccard (trigrams; bigrams for Chinese)
    at or above its near-duplicate threshold. Pairs that passed that gate pass this check.
    """
    threshold = _near_threshold()
    grams = [shingles(item.question) for item in items]
    exact = {normalise(item.question).replace(" ", ""): item for item in items}
    postings: dict[str, list[int]] = {}
    for i, gs in enumerate(grams):
        for g in gs:
            postings.setdefault(g, []).append(i)
    collisions: dict[int, Collision] = {}
    for tq in training_questions(refs):
        hit = exact.get(normalise(tq.text).replace(" ", ""))
        if hit is not None:
            collisions.setdefault(hit.line, Collision(hit, tq, "exact"))
            continue
        theirs = shingles(tq.text)
        shared: dict[int, int] = {}
        for g in theirs:
            for i in postings.get(g, ()):
                shared[i] = shared.get(i, 0) + 1
        for i, n in shared.items():
            jaccard = n / (len(grams[i]) + len(theirs) - n)
            if jaccard >= threshold and items[i].line not in collisions:
                collisions[items[i].line] = Collision(items[i], tq,
                                                      f"near match, Jaccard {jaccard:.2f}")
    return [collisions[line] for line in sorted(collisions)]


def check_no_leak(items: list[QAItem], qa_path: Path, refs: list[DatasetRef]) -> None:
    """Refuse (EvalLeakError naming the colliding rows) when eval questions were trained on."""
    collisions = find_leaks(items, refs)
    if collisions:
        raise EvalLeakError(qa_path, collisions)
