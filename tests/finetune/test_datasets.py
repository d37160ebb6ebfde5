"""The dataset reader: LLaMA-Factory formats load, and every malformed row names file, row, field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.datasets import (DatasetSpec, KTOExample, PreferenceExample, SFTExample,
                               load_dataset, load_datasets, read_dataset_info, write_dataset_info)
from ragtune.errors import DatasetError


def _write(path: Path, rows, *, jsonl: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    else:
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), "utf-8")
    return path


def _info(ddir: Path, info: dict) -> None:
    (ddir / "dataset_info.json").write_text(json.dumps(info), "utf-8")


ALPACA = [
    {"instruction": "What is the fire exit?", "input": "", "output": "Door B."},
    {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be brief.",
     "history": [["hi", "hello!"]]},
]


def test_alpaca_by_path_joins_instruction_and_input(tmp_path):
    exs = load_dataset(str(_write(tmp_path / "a.json", ALPACA)))
    assert all(isinstance(e, SFTExample) for e in exs)
    assert exs[0].messages == [{"role": "user", "content": "What is the fire exit?"},
                               {"role": "assistant", "content": "Door B."}]
    assert exs[1].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"},
        {"role": "user", "content": "Translate\nbonjour"},
        {"role": "assistant", "content": "hello"}]


def test_alpaca_jsonl_and_custom_columns_by_name(tmp_path):
    _write(tmp_path / "qa.jsonl", [{"q": "Q1?", "a": "A1"}, {"q": "Q2?", "a": "A2"}], jsonl=True)
    _info(tmp_path, {"qa": {"file_name": "qa.jsonl", "columns": {"prompt": "q", "response": "a"}}})
    exs = load_dataset("qa", tmp_path)
    assert [e.messages[-1]["content"] for e in exs] == ["A1", "A2"]
    assert exs[1].messages[0] == {"role": "user", "content": "Q2?"}


def test_sharegpt_from_value_and_openai_messages(tmp_path):
    conv = [{"conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "hi"},
                               {"from": "gpt", "value": "hey"}, {"from": "human", "value": "bye"},
                               {"from": "gpt", "value": "ciao"}]}]
    _write(tmp_path / "sg.json", conv)
    oa = [{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好"}]}]
    _write(tmp_path / "oa.jsonl", oa, jsonl=True)
    _info(tmp_path, {"sg": {"file_name": "sg.json", "formatting": "sharegpt"},
                     "oa": {"file_name": "oa.jsonl", "formatting": "sharegpt",
                            "columns": {"messages": "messages"},
                            "tags": {"role_tag": "role", "content_tag": "content",
                                     "user_tag": "user", "assistant_tag": "assistant"}}})
    sg = load_dataset("sg", tmp_path)[0]
    assert [m["role"] for m in sg.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert load_dataset("oa", tmp_path)[0].messages[1]["content"] == "您好"
    # the same file by path: the OpenAI format is detected from the first row
    assert load_dataset(str(tmp_path / "oa.jsonl"))[0].messages[0]["content"] == "你好"
    assert len(load_datasets("sg, oa", tmp_path)) == 2


def test_preference_alpaca_and_sharegpt(tmp_path):
    _write(tmp_path / "p.json", [{"instruction": "Q?", "chosen": "good [1]", "rejected": "bad"}])
    _write(tmp_path / "ps.json", [{"conversations": [{"from": "human", "value": "Q?"}],
                                   "chosen": {"from": "gpt", "value": "good"},
                                   "rejected": {"from": "gpt", "value": "bad"}}])
    _info(tmp_path, {"p": {"file_name": "p.json", "ranking": True,
                           "columns": {"prompt": "instruction", "chosen": "chosen",
                                       "rejected": "rejected"}},
                     "ps": {"file_name": "ps.json", "formatting": "sharegpt", "ranking": True,
                            "columns": {"messages": "conversations", "chosen": "chosen",
                                        "rejected": "rejected"}}})
    (p,) = load_dataset("p", tmp_path)
    assert isinstance(p, PreferenceExample)
    assert (p.messages, p.chosen, p.rejected) == ([{"role": "user", "content": "Q?"}], "good [1]",
                                                  "bad")
    (ps,) = load_dataset("ps", tmp_path)
    assert (ps.messages[-1]["role"], ps.chosen, ps.rejected) == ("user", "good", "bad")
    with pytest.raises(DatasetError, match="same kind"):
        load_datasets(["p", str(_write(tmp_path / "s.json", ALPACA))], tmp_path)


def test_kto_alpaca_and_sharegpt(tmp_path):
    _write(tmp_path / "k.json", [{"instruction": "Q?", "output": "A", "kto_tag": True},
                                 {"instruction": "Q?", "output": "B", "kto_tag": False}])
    exs = load_dataset(str(tmp_path / "k.json"))
    assert [(type(e), e.completion, e.label) for e in exs] == [(KTOExample, "A", True),
                                                               (KTOExample, "B", False)]
    _write(tmp_path / "ks.json", [{"messages": [{"role": "user", "content": "Q?"},
                                                {"role": "assistant", "content": "A"}],
                                   "label": False}])
    (k,) = load_dataset(str(tmp_path / "ks.json"))
    assert (k.messages, k.completion, k.label) == ([{"role": "user", "content": "Q?"}], "A", False)


def test_dataset_info_round_trip(tmp_path):
    specs = [DatasetSpec("sft", "sft.json", columns={"prompt": "instruction", "system": "system"}),
             DatasetSpec("dpo", "dpo.json", ranking=True,
                         columns={"chosen": "chosen", "rejected": "rejected"}),
             DatasetSpec("chat", "chat.jsonl", "sharegpt", tags={"role_tag": "role"}),
             DatasetSpec("kto", "kto.json", columns={"kto_tag": "label"}, num_samples=5)]
    write_dataset_info(tmp_path, specs[:2])
    write_dataset_info(tmp_path, specs[2:])  # merges with the existing entries
    back = read_dataset_info(tmp_path)
    assert back == {s.name: s for s in specs}
    assert [back[n].kind for n in ("sft", "dpo", "chat", "kto")] == ["sft", "preference", "sft",
                                                                     "kto"]
    raw = json.loads((tmp_path / "dataset_info.json").read_text())
    assert raw["sft"]["columns"] == {"prompt": "instruction", "system": "system"}
    assert raw["dpo"]["ranking"] is True and "tags" not in raw["dpo"]
    # LLaMA-Factory reads `history` only when named: a default is never written back
    assert "history" not in json.dumps(raw)


# ---------------------------------------------------------------- malformed input

BAD_ROWS = [
    # (rows, row number, field, words in the message)
    ([{"instruction": "ok", "output": "A"}, {"question": "Q", "output": "A"}], 2, "instruction",
     "missing"),
    ([{"instruction": "Q", "input": "", "output": ""}], 1, "output", "empty"),
    ([{"instruction": "Q"}], 1, "output", "missing"),
    ([{"instruction": 3, "output": "A"}], 1, "instruction", "must be a string"),
    ([{"instruction": "", "input": "", "output": "A"}], 1, "instruction", "empty"),
    ([{"instruction": "Q", "output": ["A"]}], 1, "output", "must be a string"),
    ([{"instruction": "Q", "output": "A", "history": [["only one"]]}], 1, "history", "pair"),
    ([{"instruction": "Q", "output": "A", "history": "x"}], 1, "history", "list"),
    ([["Q", "A"]], 1, None, "JSON object"),
    ([{"messages": [{"role": "assistant", "content": "A"}]}], 1, "messages[0]", "expected a user"),
    ([{"messages": [{"role": "user", "content": "Q"}, {"role": "user", "content": "Q"}]}], 1,
     "messages[1]", "expected an assistant"),
    ([{"messages": [{"role": "user", "content": "Q"}]}], 1, "messages", "end with an assistant"),
    ([{"messages": [{"role": "user", "content": "Q"}, {"role": "bot", "content": "A"}]}], 1,
     "messages[1]", "unknown role"),
    ([{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "A"}]}], 1,
     "messages[0]", "non-empty"),
    ([{"messages": [{"role": "user", "text": "Q"}]}], 1, "messages[0]", "`content`"),
    ([{"messages": []}], 1, "messages", "non-empty list"),
    ([{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
                    {"role": "system", "content": "late"}]}], 1, "messages[2]", "first"),
    ([{"instruction": "Q", "chosen": "A", "rejected": 5}], 1, "rejected", "string"),
    ([{"instruction": "Q", "chosen": "", "rejected": "B"}], 1, "chosen", "empty"),
    ([{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
       "chosen": "x", "rejected": "y"}], 1, "messages", "end with a user"),
    ([{"instruction": "Q", "output": "A", "kto_tag": "yes"}], 1, "kto_tag", "true or false"),
]


@pytest.mark.parametrize(("rows", "row", "field", "words"), BAD_ROWS)
def test_malformed_rows_name_file_row_field(tmp_path, rows, row, field, words):
    path = _write(tmp_path / "bad.json", rows)
    with pytest.raises(DatasetError) as info:
        load_dataset(str(path))
    err = info.value
    assert (err.path, err.row, err.field) == (str(path), row, field)
    assert words in str(err) and str(path) in str(err)


def test_missing_column_hint_says_how_to_map_it(tmp_path):
    path = _write(tmp_path / "bad.json", [{"question": "Q", "answer": "A"}])
    with pytest.raises(DatasetError) as info:
        load_dataset(str(path))
    assert "['answer', 'question']" in info.value.hint and '"columns"' in info.value.hint


def test_bad_json_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "Q", "output": "A"}\n\n{"instruction": "Q", output}\n')
    with pytest.raises(DatasetError) as info:
        load_dataset(str(path))
    assert info.value.row == 3 and "line 3" in str(info.value)
    arr = tmp_path / "bad.json"
    arr.write_text('[\n {"instruction": "Q", "output": "A"},\n {"instruction": }\n]')
    with pytest.raises(DatasetError, match="line 3"):
        load_dataset(str(arr))
    obj = tmp_path / "obj.json"
    obj.write_text('{\n "rows": []\n}')
    with pytest.raises(DatasetError, match="expected an array"):
        load_dataset(str(obj))


def test_undefined_dataset_lists_known_names_and_where(tmp_path):
    _write(tmp_path / "a.json", ALPACA)
    _info(tmp_path, {"alpha": {"file_name": "a.json"}, "beta": {"file_name": "a.json"}})
    with pytest.raises(DatasetError) as info:
        load_dataset("gamma", tmp_path)
    msg = str(info.value)
    assert "gamma" in msg and "alpha, beta" in msg and str(tmp_path / "dataset_info.json") in msg
    with pytest.raises(DatasetError, match="dataset_info.json not found") as info:
        load_dataset("gamma", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "dataset_info.json") in str(info.value)


def test_bad_dataset_info_entries(tmp_path):
    _info(tmp_path, {"hub": {"hf_hub_url": "org/data"}})
    with pytest.raises(DatasetError, match="hub datasets") as info:
        read_dataset_info(tmp_path)
    assert info.value.field == "file_name"
    _info(tmp_path, {"x": {"file_name": "a.json", "formatting": "csv"}})
    with pytest.raises(DatasetError, match="formatting"):
        read_dataset_info(tmp_path)
    _info(tmp_path, {"x": {"file_name": "missing.json"}})
    with pytest.raises(DatasetError, match="file not found"):
        load_dataset("x", tmp_path)
    (tmp_path / "dataset_info.json").write_text('{"x": {"file_name": "a.json",}}')
    with pytest.raises(DatasetError, match="invalid JSON"):
        read_dataset_info(tmp_path)


def test_json_lines_in_a_json_file_a_folder_and_num_samples(tmp_path):
    lines = tmp_path / "lines.json"  # JSON lines saved with a .json name (common on the hub)
    lines.write_text("".join(json.dumps(r) + "\n" for r in ALPACA), encoding="utf-8")
    assert len(load_dataset(str(lines))) == 2
    folder = tmp_path / "parts"
    _write(folder / "a.json", ALPACA)
    _write(folder / "b.jsonl", ALPACA[:1], jsonl=True)
    _info(tmp_path, {"parts": {"file_name": "parts"}, "few": {"file_name": "parts",
                                                             "num_samples": 2}})
    assert len(load_dataset("parts", tmp_path)) == 3
    assert len(load_dataset("few", tmp_path)) == 2
