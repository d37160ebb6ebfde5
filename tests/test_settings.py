"""Settings: the torch thread knob is validated and applied."""

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
