"""Fixtures of the serving-core tests: the serving fixtures shared with tests/api, and a tiny
model on the GGUF grids (block kernels) with a LoRA adapter."""

import pytest

from tests.serving_fixtures import *  # noqa: F401,F403
from tests.serving_fixtures import make_adapter
from tests.tiny_models import save_tiny_model, snap_to_gguf_grid


@pytest.fixture(scope="module")
def grid_model(tmp_path_factory):
    """A tiny model whose weights lie on the GGUF grids, and a LoRA adapter for it."""
    from transformers import AutoModelForCausalLM

    base = save_tiny_model(tmp_path_factory.mktemp("grid-llama"), "llama")
    model = AutoModelForCausalLM.from_pretrained(base)
    snap_to_gguf_grid(model)
    model.save_pretrained(base)
    adapter = make_adapter(base, tmp_path_factory.mktemp("grid-run") / "adapter", seed=4)
    return base, adapter
