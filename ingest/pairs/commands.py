"""`ragtune pairs`: regenerate the SFT dataset from the stored index (no file is re-read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal


def pairs(workspace: Path | None = None,
          generator: Literal["offline", "teacher", "self"] = "offline",
          mode: Literal["plain", "context", "both"] = "both",
          oracle_p: float = 0.8,
          distractors: int = 3,
          no_oracle_answer: Literal["ground_truth", "refuse"] = "refuse",
          hard_negatives: int = 3,
          val_ratio: float = 0.05,
          seed: int = 42,
          max_pairs_per_chunk: int = 6,
          eval_file: str = "data/eval/qa.jsonl",
          identity: bool = True,
          teacher_base_url: str = "",
          teacher_api_key: str = "",
          teacher_model: str = "",
          teacher_concurrency: int = 4,
          teacher_retries: int = 4,
          config: Path | None = None,
          regenerate: bool = False, local_generator: Any = None) -> int:
    """Turn the indexed documents into SFT pairs (alpaca JSON + dataset_info.json).

    Writes `<workspace>/datasets/ragtune_sft.json`, `ragtune_sft_val.json`,
    `ragtune_identity.json`, `dataset_info.json` (LLaMA-Factory trains them unchanged) and
    `pairs_config.yaml`, then prints a stats line. Only documents that changed since the last
    run get new pairs (pairs are cached per document content); removed documents drop theirs.

    Args:
        workspace: workspace directory (default: settings / RAGTUNE_WORKSPACE / ./workspace).
        generator: offline (rules, no model), teacher (OpenAI-compatible endpoint) or self
            (the local generator model).
        mode: plain (closed-book), context (RAFT: oracle + distractor passages, cited answer)
            or both.
        oracle_p: share of context samples that contain the oracle passage.
        distractors: distractor passages per context sample.
        no_oracle_answer: answer when the oracle is left out: refuse (default) or ground_truth
            (RAFT's original).
        hard_negatives: distractors taken from the index's top hits for the question (0: all
            random).
        val_ratio: share of questions held out for validation (deterministic under --seed).
        seed: seed of the split and of the RAFT sampling.
        max_pairs_per_chunk: cap on questions per chunk.
        eval_file: eval questions never to train on ("" disables the check).
        identity: also write identity pairs (settings.assistant_name / organisation).
        teacher_base_url: teacher endpoint, e.g. https://api.deepseek.com/v1 or
            http://localhost:11434/v1 (Ollama).
        teacher_api_key: teacher API key (or env RAGTUNE_TEACHER_API_KEY / OPENAI_API_KEY).
        teacher_model: teacher model name, e.g. deepseek-chat.
        teacher_concurrency: parallel teacher requests.
        teacher_retries: retries per chunk (exponential backoff).
        config: a pairs_config.yaml; its values replace the defaults of the flags above, and
            flags given with a non-default value override the file.
        regenerate: ignore the per-document cache and generate every document again.
    """
    import dataclasses
    import inspect
    import logging
    import os

    from ingest.pairs.build import build_pairs
    from ingest.pairs.config import PairsConfig
    from ragtune.logs import setup_logging
    from ragtune.settings import load_settings

    values = {k: v for k, v in locals().items()
              if k in {f.name for f in dataclasses.fields(PairsConfig)}}
    if config is not None:
        defaults = {name: p.default for name, p in inspect.signature(pairs).parameters.items()}
        explicit = {k: v for k, v in values.items() if v != defaults.get(k)}
        values = {**values, **PairsConfig.from_yaml(config).to_dict(redact=False), **explicit}
    if not values["teacher_api_key"]:
        values["teacher_api_key"] = (os.environ.get("RAGTUNE_TEACHER_API_KEY")
                                     or os.environ.get("OPENAI_API_KEY", ""))
    cfg = PairsConfig(**values)
    settings = load_settings(workspace=workspace)
    log_path = setup_logging(settings.paths.logs_dir, "pairs")
    from retrieval.index import open_index

    with open_index(settings, create=False) as index:
        changed = sorted({c.source for c in index.chunks()}) if regenerate else None
        report = build_pairs(settings, index, cfg, changed, local_generator=local_generator)
    print(report.line())
    print(f"dataset: {report.files['ragtune_sft'] if 'ragtune_sft' in report.files else '-'} "
          f"(registered in {report.files['dataset_info']}); log: {log_path}")
    logging.getLogger(__name__).info("pairs written to %s", settings.paths.datasets_dir)
    return 0
