"""`PairsConfig`: every knob of SFT pair generation, validated, and written next to the dataset."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from ragtune.errors import ConfigError

GeneratorName = Literal["offline", "teacher", "self"]
Mode = Literal["plain", "context", "both"]
NoOracle = Literal["ground_truth", "refuse"]


@dataclass
class PairsConfig:
    """How SFT pairs are generated from the indexed chunks.

    Args:
        generator: offline (rules, no model), teacher (an OpenAI-compatible endpoint) or self
            (the local generator model).
        mode: plain (closed-book question -> answer), context (RAFT: question + retrieved
            passages -> cited answer) or both.
        oracle_p: share of context samples whose passages include the oracle chunk (RAFT's P).
        distractors: distractor chunks per context sample (RAFT's k); oracle + k passages.
        no_oracle_answer: answer of samples without the oracle: refuse (default: the NO_ANSWER
            sentence, what the grounding check expects when the passages lack the answer) or
            ground_truth (RAFT's original: the model answers from memory).
        hard_negatives: distractors drawn from the index's own top hits for the question
            (near misses) before random ones; 0 for random distractors only.
        val_ratio: share of questions held out in the validation file.
        seed: seed of the split, the distractor choice and the oracle drop.
        max_pairs_per_chunk: cap on questions kept per chunk (after quality filtering).
        min_question_chars / max_question_chars / max_answer_chars: length limits.
        near_dup_threshold: character-trigram Jaccard at or above which two questions are
            near-duplicates (also used against the eval questions).
        support_threshold: share of an answer's content tokens the chunk must contain.
        eval_file: questions never to train on (data/eval/qa.jsonl); "" disables the check.
        identity: also write identity pairs (assistant name and organisation, English + Chinese).
        system_prompt: put ragtune's system prompt into every row (as /ask sends it).
        teacher_base_url / teacher_api_key / teacher_model: the teacher endpoint.
        teacher_concurrency / teacher_retries / teacher_timeout_s / teacher_temperature:
            request handling of the teacher.
        self_max_new_tokens: generation budget of the self generator per chunk.
    """

    generator: GeneratorName = "offline"
    mode: Mode = "both"
    oracle_p: float = 0.8
    distractors: int = 3
    hard_negatives: int = 3
    no_oracle_answer: NoOracle = "refuse"
    val_ratio: float = 0.05
    seed: int = 42
    max_pairs_per_chunk: int = 6
    min_question_chars: int = 6
    max_question_chars: int = 300
    max_answer_chars: int = 1200
    near_dup_threshold: float = 0.9
    support_threshold: float = 0.75
    eval_file: str = "data/eval/qa.jsonl"
    identity: bool = True
    system_prompt: bool = True
    teacher_base_url: str = ""
    teacher_api_key: str = ""
    teacher_model: str = ""
    teacher_concurrency: int = 4
    teacher_retries: int = 4
    teacher_timeout_s: float = 120.0
    teacher_temperature: float = 0.2
    self_max_new_tokens: int = 384

    def __post_init__(self) -> None:
        self._choice("generator", ("offline", "teacher", "self"))
        self._choice("mode", ("plain", "context", "both"))
        self._choice("no_oracle_answer", ("ground_truth", "refuse"))
        self._range("oracle_p", 0.0, 1.0)
        self._range("val_ratio", 0.0, 0.9)
        self._range("near_dup_threshold", 0.5, 1.0)
        self._range("support_threshold", 0.0, 1.0)
        for name in ("distractors", "hard_negatives", "max_pairs_per_chunk", "min_question_chars",
                     "max_question_chars", "max_answer_chars", "teacher_concurrency",
                     "teacher_retries", "self_max_new_tokens"):
            low = 0 if name in ("distractors", "hard_negatives", "teacher_retries",
                                "min_question_chars") else 1
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(name, value, f"must be an integer >= {low}")
        if self.max_question_chars <= self.min_question_chars:
            raise ConfigError("max_question_chars", self.max_question_chars,
                              f"must exceed min_question_chars ({self.min_question_chars})")
        if self.teacher_timeout_s <= 0:
            raise ConfigError("teacher_timeout_s", self.teacher_timeout_s, "must be > 0")
        if self.generator == "teacher":
            for name in ("teacher_base_url", "teacher_model"):
                if not getattr(self, name):
                    raise ConfigError(name, getattr(self, name),
                                      "required with generator=teacher (e.g. "
                                      "https://api.deepseek.com/v1 and deepseek-chat)")
            if not self.teacher_base_url.startswith(("http://", "https://")):
                raise ConfigError("teacher_base_url", self.teacher_base_url,
                                  "must be an http(s) URL ending in /v1")

    def _choice(self, name: str, allowed: tuple[str, ...]) -> None:
        if getattr(self, name) not in allowed:
            raise ConfigError(name, getattr(self, name), f"must be one of {', '.join(allowed)}")

    def _range(self, name: str, low: float, high: float) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ConfigError(name, value, f"must be a number in [{low}, {high}]")

    def to_dict(self, *, redact: bool = True) -> dict:
        """Plain dict of the fields; the teacher API key is redacted unless asked otherwise."""
        data = asdict(self)
        if redact and data["teacher_api_key"]:
            data["teacher_api_key"] = "***"
        return data

    def write_yaml(self, path: Path) -> Path:
        """Write the resolved config (API key redacted) atomically as YAML."""
        import yaml

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True),
                       encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_yaml(cls, path: Path) -> PairsConfig:
        """Read a config written by `write_yaml` (unknown keys are an error naming the key)."""
        import yaml

        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(key, data[key], f"unknown field in {path}")
        if data.get("teacher_api_key") == "***":
            data["teacher_api_key"] = ""
        return cls(**data)
