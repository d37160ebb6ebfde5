"""SFT pair generation: documents (as indexed chunks) -> LLaMA-Factory alpaca datasets.

Generators (`PairGenerator`): `offline` (rules, no model), `teacher` (OpenAI-compatible API),
`self` (the local model). RAFT context rows use the same prompt layout as /ask.
Entry points: `build_pairs(settings, index_or_chunks, cfg)` and the `pairs` command.
"""

from ingest.pairs.base import PairGenerator, QAPair
from ingest.pairs.build import PairsReport, build_pairs, make_generator
from ingest.pairs.config import PairsConfig

__all__ = ["PairGenerator", "PairsConfig", "PairsReport", "QAPair", "build_pairs",
           "make_generator"]
