"""The `ragtune` command line, built from typed entry functions (jsonargparse).

Each command is a typed function whose docstring is its `--help`; a stage whose command takes
a config dataclass (e.g. `finetune run`) gets one flag per field and `--config FILE.yaml`.
Errors derived from `RagtuneError` are translated here, at the edge, into a message and an
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ragtune.errors import RagtuneError


def _components() -> tuple[dict[str, Any], dict[type, Callable[[Any], Any]]]:
    """Command tree, and for config-dataclass commands the function that runs the config."""
    from ragtune.models import models

    tree: dict[str, Any] = {"models": models}
    runners: dict[type, Callable[[Any], Any]] = {}
    return tree, runners


def _dispatch(tree: dict[str, Any], runners: dict[type, Callable[[Any], Any]],
              args: list[str]) -> int:
    from jsonargparse import CLI

    try:
        result = CLI(tree, args=args, as_positional=True, env_prefix="RAGTUNE", default_env=False)
        runner = runners.get(type(result))
        if runner is not None:
            result = runner(result)
    except RagtuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    """`ragtune <command> ...`"""
    tree, runners = _components()
    return _dispatch(tree, runners, sys.argv[1:] if argv is None else argv)


def ingest_main(argv: list[str] | None = None) -> int:
    """`ingest PATH...`: short form of `ragtune ingest`."""
    return main(["ingest", *(sys.argv[1:] if argv is None else argv)])


def finetune_main(argv: list[str] | None = None) -> int:
    """`finetune run|merge ...`: short form of `ragtune finetune ...`."""
    return main(["finetune", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
