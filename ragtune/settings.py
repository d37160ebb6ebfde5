"""One settings class for the whole product (pydantic-settings).

Precedence, highest first: explicit arguments (CLI flags) > environment (`RAGTUNE_*`) >
YAML file (`RAGTUNE_CONFIG`, or `./ragtune.yaml` when present) > defaults.
Everything a run produces goes under `workspace` (see `Workspace`).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (BaseSettings, NoDecode, PydanticBaseSettingsSource,
                               SettingsConfigDict, YamlConfigSettingsSource)

from ragtune.errors import ConfigError

EMBEDDED_GENERATOR = "embedded:smollm2-135m"
EMBEDDED_EMBEDDER = "embedded:all-minilm-l6-v2"
GPU_GENERATOR = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


Role = Literal["ask", "admin"]
ROLES: tuple[Role, ...] = ("ask", "admin")


class ApiKey(BaseModel):
    """One API key and its role: `ask` (questions, chat, models, feedback on answers) or
    `admin` (everything, including documents, ingest, runs and the feedback statistics)."""

    key: SecretStr = Field(min_length=1)
    role: Role = "ask"


def parse_api_keys(value: Any) -> Any:
    """`api_keys` from the environment's `key1:ask,key2:admin`, a YAML mapping `{key: role}` or
    a list of `{key, role}` (a key without a role is an `ask` key)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, dict):
        return [{"key": k, "role": v} for k, v in value.items()]
    if isinstance(value, list):
        items = []
        for item in value:
            if isinstance(item, str):
                key, _, role = item.rpartition(":") if ":" in item else (item, "", "ask")
                if role not in ROLES:  # a key that itself holds ':' and no role
                    key, role = item, "ask"
                items.append({"key": key, "role": role})
            else:
                items.append(item)
        return items
    return value


def _yaml_file() -> Path | None:
    explicit = os.environ.get("RAGTUNE_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("ragtune.yaml")
    return local if local.is_file() else None


class Settings(BaseSettings):
    """Product-wide settings; every field is also `RAGTUNE_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RAGTUNE_", extra="forbid",
                                      env_nested_delimiter="__")

    workspace: Path = Path("workspace")
    # Models: "auto", "embedded:<name>", a Hugging Face id or a local directory.
    generator: str = "auto"
    embedder: str = EMBEDDED_EMBEDDER
    # Prompts the embedder puts before queries / passages (None: the model's own sentence-transformers
    # config, `prompts` in config_sentence_transformers.json, or the known prefixes of E5/BGE models).
    embedder_query_prompt: str | None = None
    embedder_passage_prompt: str | None = None
    # Languages the embedder reads (e.g. ["en"] or ["multilingual"]); None: from its model card.
    embedder_languages: list[str] | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # CPU threads for torch (0: torch's default, one per core). 1 keeps a small VM that other
    # processes share from collapsing: torch's spinning threads slow down 5-30x under contention.
    torch_threads: int = Field(0, ge=0)
    # Ingest.
    chunk_size: int = Field(500, gt=0)
    chunk_overlap: int = Field(60, ge=0)
    max_file_mb: float = Field(50.0, gt=0)
    # Per-file limits: a breach is that file's failure line; the other files are ingested.
    max_file_seconds: float = Field(600.0, gt=0)  # wall time to load one file (checked per page/1000 rows)
    max_html_depth: int = Field(256, ge=8)  # element nesting (the HTML parser's own limit is 256)
    max_rows: int = Field(100_000, ge=1)  # records in one CSV/JSONL file
    max_chunks: int = Field(20_000, ge=1)  # chunks from one document
    min_chunk_chars: int = Field(40, ge=0)  # smaller fragments merge into a neighbour (character cells)
    # OCR of pages without a text layer and of image files (RapidOCR on CPU, models in the wheel).
    ocr: bool = True
    ocr_max_pages: int = Field(50, ge=1)  # pages OCR'd per document; more fails that document
    ocr_timeout_s: float = Field(300.0, gt=0)  # OCR time per document, checked after each page
    # Serving.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = None  # a single admin key (kept for older configs)
    # Keys with roles; env RAGTUNE_API_KEYS="key1:ask,key2:admin".
    api_keys: Annotated[list[ApiKey], NoDecode] = Field(default_factory=list)
    # Folders that POST /documents/ingest may read (default: <workspace>/uploads only).
    documents_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    max_upload_files: int = Field(20, ge=1)
    cors_origins: list[str] = Field(default_factory=list)
    generator_backend: Literal["transformers", "openai"] = "transformers"
    upstream_base_url: str | None = None
    upstream_api_key: SecretStr | None = None
    upstream_model: str | None = None
    # Does the upstream model's chat template open `<think>` in the prompt, so that its output
    # starts mid-reasoning with a bare `</think>`? None: decide by the model's name (DeepSeek-R1,
    # R1 distills, QwQ); set it for a reasoning model served under another name.
    upstream_opens_thinking: bool | None = None
    top_k: int = Field(4, ge=1, le=50)
    relevance_threshold: float = 0.0  # raw retrieval score floor (mode-specific); prefer the gate
    # Grounding (see docs/serving.md "Grounding"): what a user gets when an answer is not
    # supported by a passage it cites, and the "nothing relevant was found" gate (None: the
    # calibration beside the index, written by `ragtune eval --calibrate`, else the default).
    on_unsupported: Literal["extract", "refuse", "flag"] = "extract"
    answerable_threshold: float | None = Field(None, ge=0.0, le=1.0)
    extract_threshold: float = Field(0.0, ge=0.0, le=1.0)  # `extract` quotes only above this
    # RAG replies may not open with "[" nor start a line "[n] " (a passage header of the context
    # list, which a tuned model continues: "[5] docs/x.html › Chapter 7 …"); see Assistant.request
    context_echo_guard: bool = True
    reranker: str = ""  # a cross-encoder (HF id or local dir) used by serving and eval
    max_new_tokens: int = Field(256, ge=1)
    max_question_chars: int = Field(4000, ge=1)
    max_new_tokens_limit: int = Field(2048, ge=1)
    max_top_k: int = Field(20, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_batch_size: int = Field(16, ge=1)
    max_queue: int = Field(64, ge=1)
    request_timeout_s: float = Field(120.0, gt=0)
    # The in-process engine (serving.config.EngineConfig has what each one does).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_wait_ms: float = Field(4.0, ge=0)
    prefill_chunk_tokens: int = Field(256, ge=1)
    prefix_cache_entries: int = Field(8, ge=0)
    repeat_guard_tokens: int = Field(32, ge=0)
    repeat_ban: bool = True
    weight_kernel: Literal["auto", "dense", "block"] = "auto"
    # UI.
    api_url: str = "http://127.0.0.1:8000"
    ui_port: int = Field(7860, ge=0, le=65535)
    # Identity used in SFT identity pairs and the default system prompt.
    assistant_name: str = "ragtune"
    organisation: str = "ragtune"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        return parse_api_keys(v)

    @field_validator("documents_roots", mode="before")
    @classmethod
    def _roots(cls, v: Any) -> Any:
        """The environment's `RAGTUNE_DOCUMENTS_ROOTS` is a list separated by os.pathsep."""
        if isinstance(v, str):
            return [part for part in v.split(os.pathsep) if part.strip()]
        return v

    @property
    def document_roots(self) -> list[Path]:
        """The folders documents may be ingested from (absolute; default <workspace>/uploads)."""
        roots = self.documents_roots or [self.paths.uploads_dir]
        return [Path(r).expanduser().absolute() for r in roots]

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, v: int, info: Any) -> int:
        size = info.data.get("chunk_size")
        if size is not None and v >= size:
            raise ValueError(f"chunk_overlap ({v}) must be smaller than chunk_size ({size})")
        return v

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_path = _yaml_file()
        if yaml_path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)

    @cached_property
    def paths(self) -> Workspace:
        return Workspace(self.workspace)


class Workspace:
    """Where each artifact lives inside the workspace directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def evals_dir(self) -> Path:
        return self.root / "evals"

    @property
    def feedback_db(self) -> Path:
        return self.root / "feedback.sqlite"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; False for 0.0.0.0, :: and any other host."""
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def apply_torch_threads(settings: Settings) -> None:
    """Set torch's intra-op thread count from `torch_threads` (0 leaves torch's default)."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


def load_settings(**overrides: Any) -> Settings:
    """Build settings, dropping `None` overrides so unset CLI flags do not mask env/YAML."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def load_checked_settings(**overrides):
    """`load_settings` with pydantic validation errors turned into ConfigError (flag + value)."""
    from pydantic import ValidationError

    try:
        settings = load_settings(**overrides)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise ConfigError(field, first.get("input"), first.get("msg", str(err))) from None
    apply_torch_threads(settings)
    return settings
