"""Settings: the torch thread knob is validated and applied; the engine fields reach the engine."""

import pytest
import torch
from pydantic import ValidationError

from ragtune.settings import apply_torch_threads, load_settings


def test_torch_threads_from_the_environment_is_applied(monkeypatch, tmp_path):
    before = torch.get_num_threads()
    monkeypatch.setenv("RAGTUNE_TORCH_THREADS", "1")
    try:
        settings = load_settings(workspace=tmp_path)
        assert settings.torch_threads == 1
        apply_torch_threads(settings)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(before + 1)
        apply_torch_threads(load_settings(workspace=tmp_path, torch_threads=0))  # 0: untouched
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)


def test_negative_torch_threads_names_the_field(tmp_path):
    with pytest.raises(ValidationError, match="torch_threads"):
        load_settings(workspace=tmp_path, torch_threads=-1)


def test_engine_settings_come_from_the_environment(monkeypatch, tmp_path):
    from serving.config import EngineConfig

    monkeypatch.setenv("RAGTUNE_PREFILL_CHUNK_TOKENS", "64")
    monkeypatch.setenv("RAGTUNE_REPEAT_GUARD_TOKENS", "0")
    monkeypatch.setenv("RAGTUNE_DTYPE", "bfloat16")
    assert EngineConfig.from_settings(load_settings(workspace=tmp_path)).repeat_ban
    monkeypatch.setenv("RAGTUNE_REPEAT_BAN", "false")
    config = EngineConfig.from_settings(load_settings(workspace=tmp_path))
    assert (config.prefill_chunk_tokens, config.repeat_guard_tokens, config.dtype,
            config.repeat_ban) == (64, 0, "bfloat16", False)
    monkeypatch.setenv("RAGTUNE_PREFIX_CACHE_ENTRIES", "-1")
    with pytest.raises(ValidationError, match="prefix_cache_entries"):
        load_settings(workspace=tmp_path)
