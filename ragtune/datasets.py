"""Read LLaMA-Factory style datasets (alpaca, sharegpt/OpenAI messages, preference, KTO).

A dataset is named in a `dataset_info.json` (`file_name`, `formatting`, `ranking`, `columns`,
`tags`) or given as a path to a .json/.jsonl file, in which case its format is detected from the
first row. Every malformed row raises `DatasetError` naming the file, the 1-based row and the
field, with a hint on how to fix it (instead of LLaMA-Factory's `KeyError: 'instruction'`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragtune.errors import DatasetError
from ragtune.types import ChatMessage

Formatting = Literal["alpaca", "sharegpt"]

ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output",
                  "system": "system", "history": "history"}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                 "assistant_tag": "gpt", "system_tag": "system",
                 "observation_tag": "observation", "function_tag": "function_call"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
               "assistant_tag": "assistant", "system_tag": "system",
               "observation_tag": "tool", "function_tag": "function_call"}
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


@dataclass
class SFTExample:
    """A conversation for supervised fine-tuning: system?, then user/assistant turns, last assistant."""

    messages: list[ChatMessage]


@dataclass
class PreferenceExample:
    """A prompt (turns ending with the user) with a preferred and a dispreferred reply (DPO)."""

    messages: list[ChatMessage]
    chosen: str
    rejected: str


@dataclass
class KTOExample:
    """A prompt, one completion and whether it is desirable (KTO)."""

    messages: list[ChatMessage]
    completion: str
    label: bool


Example = SFTExample | PreferenceExample | KTOExample


@dataclass
class DatasetSpec:
    """One `dataset_info.json` entry; `col()` and `all_tags` fill in LLaMA-Factory's defaults.

    `columns` and `tags` hold what the entry states, so `to_info()` writes back exactly that
    (LLaMA-Factory reads a column such as `history` only when it is named)."""

    name: str
    file_name: str
    formatting: Formatting = "alpaca"
    ranking: bool = False
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    num_samples: int | None = None

    def __post_init__(self) -> None:
        if self.formatting not in ("alpaca", "sharegpt"):
            raise DatasetError(self.name, f"unknown formatting {self.formatting!r}",
                               field="formatting", hint='use "alpaca" or "sharegpt"')

    def col(self, role: str) -> str:
        """The column holding `role` (prompt, query, response, messages, chosen, ...)."""
        defaults = ALPACA_COLUMNS if self.formatting == "alpaca" else SHAREGPT_COLUMNS
        return self.columns.get(role) or defaults.get(role) or role

    @property
    def all_tags(self) -> dict[str, str]:
        """The sharegpt tags with LLaMA-Factory's defaults filled in."""
        return {**SHAREGPT_TAGS, **{k: v for k, v in self.tags.items() if v}}

    @property
    def kind(self) -> Literal["sft", "preference", "kto"]:
        if self.ranking:
            return "preference"
        return "kto" if "kto_tag" in self.columns else "sft"

    def to_info(self) -> dict[str, Any]:
        """The `dataset_info.json` entry for this dataset (LLaMA-Factory reads it unchanged)."""
        info: dict[str, Any] = {"file_name": self.file_name, "formatting": self.formatting}
        if self.ranking:
            info["ranking"] = True
        if self.columns:
            info["columns"] = dict(self.columns)
        if self.tags:
            info["tags"] = dict(self.tags)
        if self.num_samples is not None:
            info["num_samples"] = self.num_samples
        return info


def read_dataset_info(dataset_dir: Path) -> dict[str, DatasetSpec]:
    """Parse `<dataset_dir>/dataset_info.json` into specs keyed by dataset name."""
    path = Path(dataset_dir) / "dataset_info.json"
    if not path.is_file():
        raise DatasetError(path, "dataset_info.json not found",
                           hint="create it, or pass a path to a .json/.jsonl file instead of a name")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(path, f"invalid JSON: {err.msg}", row=err.lineno,
                           hint=f"line {err.lineno}, column {err.colno}") from None
    if not isinstance(raw, dict):
        raise DatasetError(path, "top level must be an object mapping dataset names to entries")
    return {name: _spec_from_info(path, name, entry) for name, entry in raw.items()}


def _spec_from_info(path: Path, name: str, entry: Any) -> DatasetSpec:
    """One dataset_info entry to a DatasetSpec, with errors naming the dataset and the key."""
    where = f"{path} [{name}]"
    if not isinstance(entry, dict):
        raise DatasetError(where, "entry must be an object", hint='e.g. {"file_name": "data.json"}')
    if "file_name" not in entry:
        hub = [k for k in HUB_KEYS if k in entry]
        reason = (f"hub datasets ({hub[0]}) are not fetched by ragtune" if hub
                  else "no `file_name`")
        raise DatasetError(where, reason, field="file_name",
                           hint="download the data and set file_name to the local file")
    for key in ("columns", "tags"):
        if not isinstance(entry.get(key, {}), dict):
            raise DatasetError(where, f"`{key}` must be an object", field=key)
    spec = DatasetSpec(name=name, file_name=str(entry["file_name"]),
                       formatting=entry.get("formatting", "alpaca"),
                       ranking=bool(entry.get("ranking", False)),
                       columns=dict(entry.get("columns", {})), tags=dict(entry.get("tags", {})),
                       num_samples=entry.get("num_samples"))
    return spec


def write_dataset_info(dataset_dir: Path, specs: list[DatasetSpec], *, merge: bool = True) -> Path:
    """Write (or merge into) `<dataset_dir>/dataset_info.json` atomically."""
    path = Path(dataset_dir) / "dataset_info.json"
    info: dict[str, Any] = {}
    if merge and path.is_file():
        info = json.loads(path.read_text(encoding="utf-8"))
    info.update({s.name: s.to_info() for s in specs})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- raw rows

def read_rows(path: Path) -> list[tuple[int, Any]]:
    """Rows of a .json (array) or .jsonl file as (1-based row number, value)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        if not files:
            raise DatasetError(path, "folder holds no .json/.jsonl files")
        return [r for f in files for r in read_rows(f)]
    if not path.is_file():
        raise DatasetError(path, "file not found")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if text.lstrip().startswith("["):
                raise DatasetError(path, f"invalid JSON on line {err.lineno}, column {err.colno}: "
                                   f"{err.msg}", hint="the file must be one JSON array of row "
                                   "objects (or JSON lines)") from None
            data = None  # not one JSON document: read it as JSON lines below
        if isinstance(data, list):
            return list(enumerate(data, start=1))
        if data is not None and not (isinstance(data, dict) and len(text.strip().splitlines()) == 1):
            raise DatasetError(path, f"top level is a {type(data).__name__}, expected an array of "
                               "rows", hint="wrap the rows in [...] or write one object per line")
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DatasetError(path, f"invalid JSON on line {lineno}: {err.msg}", row=lineno,
                               hint="each line of a .jsonl file must be one JSON object") from None
    if not rows:
        raise DatasetError(path, "dataset is empty")
    return rows


def detect_spec(path: Path, rows: list[tuple[int, Any]]) -> DatasetSpec:
    """Guess formatting/ranking/columns/tags of a file given by path from its first row."""
    first = rows[0][1] if rows else {}
    if not isinstance(first, dict):
        raise DatasetError(path, f"row must be a JSON object, got {type(first).__name__}",
                           row=rows[0][0] if rows else None)
    ranking = "chosen" in first and "rejected" in first
    extra = {"chosen": "chosen", "rejected": "rejected"} if ranking else {}
    if "kto_tag" in first or "label" in first:
        extra["kto_tag"] = "kto_tag" if "kto_tag" in first else "label"
    msg_key = next((k for k in ("messages", "conversations") if k in first), None)
    if msg_key is None:
        return DatasetSpec(path.stem, str(path), "alpaca", ranking, extra)
    msgs = first.get(msg_key) or []
    openai = bool(msgs) and isinstance(msgs[0], dict) and "role" in msgs[0]
    tags = dict(OPENAI_TAGS if openai else SHAREGPT_TAGS)
    return DatasetSpec(path.stem, str(path), "sharegpt", ranking, {"messages": msg_key, **extra},
                       tags)


# ---------------------------------------------------------------- conversion

class _Row:
    """Field access for one row that raises DatasetError naming the file, row and field."""

    def __init__(self, path: str, row: int, data: Any, spec: DatasetSpec) -> None:
        self.path, self.row, self.spec = path, row, spec
        if not isinstance(data, dict):
            self.fail(None, f"row must be a JSON object, got {type(data).__name__}")
        self.data: dict[str, Any] = data

    def fail(self, fld: str | None, reason: str, hint: str | None = None) -> None:
        raise DatasetError(self.path, reason, row=self.row, field=fld, hint=hint)

    def text(self, role: str, *, required: bool = True) -> str:
        """A string column (by its role in `columns`); empty string when optional and absent."""
        col = self.spec.col(role)
        if col not in self.data or self.data[col] is None:
            if not required:
                return ""
            keys = sorted(self.data)
            self.fail(col, "missing", f"row has keys {keys}; if the column has another name, map "
                      f'it in dataset_info.json: "columns": {{"{role}": "<your column>"}}')
        value = self.data[col]
        if not isinstance(value, str):
            self.fail(col, f"must be a string, got {type(value).__name__}")
        if required and not value.strip():
            self.fail(col, "is empty", "every example needs a non-empty value here")
        return value


def _alpaca_prompt(r: _Row) -> list[ChatMessage]:
    """system?, history turns, then the user turn (instruction + "\\n" + input)."""
    msgs: list[ChatMessage] = []
    system = r.text("system", required=False)
    if system.strip():
        msgs.append({"role": "system", "content": system})
    hist_col = r.spec.col("history")
    history = r.data.get(hist_col) or []
    if not isinstance(history, list):
        r.fail(hist_col, "must be a list of [instruction, response] pairs")
    for i, turn in enumerate(history, start=1):
        if (not isinstance(turn, list | tuple) or len(turn) != 2
                or not all(isinstance(t, str) and t.strip() for t in turn)):
            r.fail(hist_col, f"item {i} must be a pair of non-empty strings [instruction, response]")
        msgs += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    instruction = r.text("prompt", required=False)
    query = r.text("query", required=False)
    user = "\n".join(p for p in (instruction, query) if p.strip())
    if not user.strip():
        col = r.spec.col("prompt")
        if col not in r.data:
            r.text("prompt")  # raises "missing" with the column-mapping hint
        r.fail(col, "is empty (and so is the input)", "every example needs an instruction")
    msgs.append({"role": "user", "content": user})
    return msgs


def _alpaca_example(r: _Row) -> Example:
    """One alpaca row as an SFT, preference or KTO example."""
    prompt = _alpaca_prompt(r)
    kind = r.spec.kind
    if kind == "preference":
        return PreferenceExample(prompt, r.text("chosen"), r.text("rejected"))
    response = r.text("response")
    if kind == "kto":
        return KTOExample(prompt, response, _kto_label(r))
    return SFTExample(prompt + [{"role": "assistant", "content": response}])


def _kto_label(r: _Row) -> bool:
    col = r.spec.col("kto_tag")
    value = r.data.get(col)
    if not isinstance(value, bool):
        r.fail(col, f"must be true or false, got {value!r}", "KTO rows need a boolean label")
    return value


def _sharegpt_turn(r: _Row, col: str, i: int, msg: Any) -> tuple[str, str]:
    """(canonical role, content) of one sharegpt message."""
    tags = r.spec.all_tags
    role_tag, content_tag = tags["role_tag"], tags["content_tag"]
    where = f"{col}[{i}]"
    if not isinstance(msg, dict) or role_tag not in msg or content_tag not in msg:
        r.fail(where, f"message must be an object with `{role_tag}` and `{content_tag}`",
               "set \"tags\" (role_tag/content_tag) in dataset_info.json if your keys differ")
    role, content = msg[role_tag], msg[content_tag]
    if not isinstance(content, str) or not content.strip():
        r.fail(where, f"`{content_tag}` must be a non-empty string")
    mapping = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant",
               tags.get("system_tag") or "system": "system"}
    if role not in mapping:
        tool = role in (tags.get("observation_tag"), tags.get("function_tag"))
        r.fail(where, f"unknown role {role!r}", "tool-calling turns are not supported" if tool
               else f"expected one of {sorted(mapping)} (or set tags in dataset_info.json)")
    return mapping[role], content


def _sharegpt_messages(r: _Row) -> list[ChatMessage]:
    """All turns of a sharegpt row, role order checked (user/assistant alternating)."""
    col = r.spec.col("messages")
    raw = r.data.get(col)
    if raw is None:
        r.fail(col, "missing", f"row has keys {sorted(r.data)}; map the conversation column with "
               f'"columns": {{"messages": "<your column>"}} in dataset_info.json')
    if not isinstance(raw, list) or not raw:
        r.fail(col, "must be a non-empty list of messages")
    msgs: list[ChatMessage] = []
    system = r.text("system", required=False)
    if system.strip():
        msgs.append({"role": "system", "content": system})
    for i, m in enumerate(raw):
        role, content = _sharegpt_turn(r, col, i, m)
        if role == "system":
            if i != 0 or msgs:
                r.fail(f"{col}[{i}]", "a system message may only come first")
            msgs.append({"role": "system", "content": content})
            continue
        turns = [x for x in msgs if x["role"] != "system"]
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            article = "an" if expected == "assistant" else "a"
            r.fail(f"{col}[{i}]", f"expected {article} {expected} turn, got {role}",
                   "turns must alternate user, assistant, user, ... starting with user")
        msgs.append({"role": role, "content": content})
    return msgs


def _sharegpt_reply(r: _Row, role_name: str) -> str:
    """The chosen/rejected reply: a message object (LLaMA-Factory) or a plain string."""
    col = r.spec.col(role_name)
    value = r.data.get(col)
    if isinstance(value, dict):
        role, content = _sharegpt_turn(r, col, 0, value)
        if role != "assistant":
            r.fail(col, f"must be an assistant message, got {role}")
        return content
    return r.text(role_name)


def _sharegpt_example(r: _Row) -> Example:
    """One sharegpt row as an SFT, preference or KTO example."""
    msgs = _sharegpt_messages(r)
    col = r.spec.col("messages")
    last = msgs[-1]["role"]
    if r.spec.kind == "preference":
        if last != "user":
            r.fail(col, "a preference prompt must end with a user turn",
                   "put the replies in the chosen/rejected columns, not in the conversation")
        return PreferenceExample(msgs, _sharegpt_reply(r, "chosen"), _sharegpt_reply(r, "rejected"))
    if last != "assistant":
        r.fail(col, "the conversation must end with an assistant turn")
    if r.spec.kind == "kto":
        return KTOExample(msgs[:-1], msgs[-1]["content"], _kto_label(r))
    return SFTExample(msgs)


def examples_from_rows(spec: DatasetSpec, path: Path, rows: list[tuple[int, Any]]) -> list[Example]:
    """Convert raw rows to examples of the spec's kind."""
    convert = _alpaca_example if spec.formatting == "alpaca" else _sharegpt_example
    out = [convert(_Row(str(path), n, data, spec)) for n, data in rows]
    if spec.num_samples is not None:
        out = out[: spec.num_samples]
    if not out:
        raise DatasetError(path, "dataset is empty")
    return out


# ---------------------------------------------------------------- entry points

def _default_dir() -> Path:
    from ragtune.settings import load_settings

    return load_settings().paths.datasets_dir


def _is_path_spec(spec: str) -> bool:
    return spec.endswith((".json", ".jsonl")) or "/" in spec or "\\" in spec


def load_dataset(spec: str, dataset_dir: Path | None = None) -> list[Example]:
    """Load one dataset: a name registered in `<dataset_dir>/dataset_info.json`, or a file path."""
    spec = spec.strip()
    if _is_path_spec(spec) or Path(spec).is_file():
        path = Path(spec)
        if not path.is_absolute() and dataset_dir is not None and not path.exists():
            path = Path(dataset_dir) / spec
        rows = read_rows(path)
        return examples_from_rows(detect_spec(path, rows), path, rows)
    ddir = Path(dataset_dir) if dataset_dir is not None else _default_dir()
    info_path = ddir / "dataset_info.json"
    if not info_path.is_file():
        raise DatasetError(info_path, f"cannot look up dataset {spec!r}: dataset_info.json not "
                           "found", hint="pass the dataset folder (dataset_dir) or a file path")
    specs = read_dataset_info(ddir)
    if spec not in specs:
        known = ", ".join(sorted(specs)) or "(none)"
        raise DatasetError(info_path, f"undefined dataset {spec!r}", field=spec,
                           hint=f"known datasets: {known}; or pass a path to a .json/.jsonl file")
    ds = specs[spec]
    path = Path(ds.file_name)
    path = path if path.is_absolute() else ddir / path
    return examples_from_rows(ds, path, read_rows(path))


def load_datasets(specs: str | list[str], dataset_dir: Path | None = None) -> list[Example]:
    """Load comma-separated (or listed) datasets and concatenate them; all must be one kind."""
    names = [s.strip() for s in (specs.split(",") if isinstance(specs, str) else specs)]
    names = [n for n in names if n]
    if not names:
        raise DatasetError(str(dataset_dir or "."), "no dataset given",
                           hint="name one registered in dataset_info.json or a file path")
    out: list[Example] = []
    for name in names:
        part = load_dataset(name, dataset_dir)
        if out and type(part[0]) is not type(out[0]):
            raise DatasetError(name, f"holds {type(part[0]).__name__} rows but earlier datasets "
                               f"hold {type(out[0]).__name__} rows",
                               hint="mix only datasets of the same kind (SFT, preference or KTO)")
        out.extend(part)
    return out
