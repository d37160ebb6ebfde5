"""ragtune: turn a folder of domain documents into a domain-expert assistant.

This small shared package holds what every stage needs: settings, errors, shared types,
embedded-model resolution, logging/progress helpers and the CLI. Each stage lives in its
own top-level package (`ingest`, `retrieval`, `finetune`, `api`, `ui`).
"""

__version__ = "0.1.0"
