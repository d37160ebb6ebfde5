"""The `ragtune` command line (Typer), built from typed entry functions.

Each command is a typed function in `<stage>/commands.py` whose docstring is its `--help`.
A command that takes a config dataclass (e.g. `finetune run`) gets one `--field` flag per
dataclass field plus `--config FILE.yaml`; flags override the file, the file overrides defaults.
`RagtuneError`s are translated here, at the edge, into a one-line message and an exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ValidationError

from ragtune.errors import ConfigError, RagtuneError

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _doc_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The docstring without its `Args:` section, and the per-argument help from that section."""
    try:
        from docstring_parser import parse
    except ImportError:  # pragma: no cover - optional nicety
        return fn.__doc__ or "", {}
    doc = parse(fn.__doc__ or "")
    paragraphs = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
    text = "\n\n".join(" ".join(par.split()) for par in paragraphs.split("\n\n"))
    return text, {p.arg_name: (p.description or "") for p in doc.params}


def _flag_names(name: str, default: Any) -> list[str]:
    """`--max_steps` (spelled as in LLaMA-Factory and HF); bools that default on get `--no_x`."""
    return [f"--{name}/--no_{name}"] if default is True else [f"--{name}"]


def _typer_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """Rebuild fn's signature with typer.Argument/Option defaults carrying the docstring help."""
    _, helps = _doc_parts(fn)
    hints = typing.get_type_hints(fn)
    params = []
    for p in inspect.signature(fn).parameters.values():
        annotation = hints.get(p.name, p.annotation)
        help_text = helps.get(p.name, "")
        if p.default is inspect.Parameter.empty:
            default = typer.Argument(..., help=help_text, show_default=False)
        else:
            default = typer.Option(p.default, *_flag_names(p.name, p.default), help=help_text)
        params.append(p.replace(default=default, annotation=annotation,
                                kind=inspect.Parameter.POSITIONAL_OR_KEYWORD))
    return inspect.Signature(params)


def _edge(fn: Callable[..., Any], *, signature: bool = True,
          inject: dict[str, Any] | None = None) -> Callable[..., Any]:
    """Run an entry function; turn its int result or a RagtuneError into the exit code.

    `inject` passes keyword arguments that are not flags (a loader from another stage: the CLI
    is the one place that may import every stage); they are left out of the signature.
    """
    inject = inject or {}

    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = fn(*args, **kwargs, **inject)
        except RagtuneError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except ValidationError as err:  # Settings (env, YAML or flags) with a bad value
            first = err.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or "settings"
            typer.echo(f"error: {ConfigError(field, first.get('input'), first.get('msg', ''))}",
                       err=True)
            raise typer.Exit(ConfigError.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        raise typer.Exit(code if isinstance(code, int) else 0)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = _doc_parts(fn)[0] if signature else fn.__doc__
    sig = _typer_signature(fn) if signature else inspect.signature(fn)
    wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for p in sig.parameters.values() if p.name not in inject])
    return wrapper


def _field_help(cls: type) -> dict[str, str]:
    """Per-field help: the docstring's `Args:` section, else the field's trailing `# comment`.

    Why not the libraries' own docstring support: Typer reads no docstrings for option help
    (only `help=`, which is what this feeds), and docstring_parser (what jsonargparse uses,
    here through `_doc_parts`) reads `Args:` sections and attribute docstrings, but not the
    trailing comments that document the config dataclasses' fields (FinetuneConfig); those
    are read from the class source with one regex.
    """
    helps = {k: v for k, v in _doc_parts(cls)[1].items() if v}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # pragma: no cover - e.g. classes built at run time
        return helps
    for match in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE):
        helps.setdefault(match.group(1), match.group(2).strip())
    return helps


def load_yaml_config(path: Path, cls: type) -> dict[str, Any]:
    """Read a YAML config whose keys must be fields of `cls`."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError("--config", str(path), f"cannot read YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError("--config", str(path), "the file must hold a mapping of field: value")
    data.pop("resolved", None)  # what a run recorded about itself (runs/NAME/run_config.yaml)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError("--config", str(path),
                          f"unknown field(s) {unknown}; valid fields: {sorted(known)}")
    return data


def config_command(cls: type, runner: Callable[[Any], int | None]) -> Callable[..., None]:
    """A Typer command whose flags are the fields of dataclass `cls`; it runs `runner(cls(...))`."""
    hints = typing.get_type_hints(cls)
    helps = _field_help(cls)
    params = [inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
        default=typer.Option(None, "--config", help="YAML file with field: value lines."))]
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        hint = hints[field.name]
        flags = [f"--{field.name}/--no_{field.name}"] if hint is bool else _flag_names(
            field.name, None)
        params.append(inspect.Parameter(
            field.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[hint],
            default=typer.Option(None, *flags, help=helps.get(field.name, ""), show_default=False)))

    def command(**kwargs: Any) -> int | None:
        config = kwargs.pop("config")
        values = load_yaml_config(config, cls) if config else {}
        values.update({k: v for k, v in kwargs.items() if v is not None})
        return runner(cls(**values))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = _doc_parts(cls)[0]
    command.__name__ = cls.__name__
    return _edge(command, signature=False)


def _typer(help_text: str, **options: Any) -> typer.Typer:
    """A command group with ragtune's defaults (-h, no shell completion, plain tracebacks)."""
    options.setdefault("no_args_is_help", True)
    return typer.Typer(context_settings=CONTEXT, add_completion=False,
                       pretty_exceptions_enable=False, help=help_text, **options)


def build_app() -> typer.Typer:
    """Assemble the command tree (imports of stage command modules are light)."""
    from api.commands import serve
    from evaluation.command import evaluate
    from ingest.commands import ingest
    from ingest.pairs.commands import pairs
    from ragtune.models import models
    from retrieval.commands import search
    from ui.commands import ui

    app = _typer("ragtune: documents in, domain-expert assistant out.")
    app.command("models")(_edge(models))
    from serving.loading import load_generator

    local = {"local_generator": load_generator}  # `--pairs self` runs the local model
    app.command("ingest")(_edge(ingest, inject=local))
    app.command("search")(_edge(search))
    app.command("pairs")(_edge(pairs, inject=local))
    app.command("serve")(_edge(serve))
    app.command("ui")(_edge(ui))
    app.command("eval")(_edge(evaluate))
    app.add_typer(_finetune_app(), name="finetune")
    app.add_typer(_runs_app(), name="runs")
    app.add_typer(_feedback_app(), name="feedback")
    return app


def _feedback_app() -> typer.Typer:
    """`feedback export|stats`: likes and A-vs-B choices as DPO/KTO datasets."""
    from feedback.commands import export, stats

    sub = _typer("Turn likes, dislikes and A-vs-B choices into DPO/KTO datasets.")
    sub.command("export")(_edge(export))
    sub.command("stats")(_edge(stats))
    return sub


def _finetune_app() -> typer.Typer:
    """`finetune run|merge`."""
    from finetune.commands import merge, run
    from finetune.config import FinetuneConfig

    sub = _typer("Fine-tune with LoRA (SFT, DPO, KTO) and merge adapters.")
    sub.command("run")(config_command(FinetuneConfig, run))
    sub.command("merge")(_edge(merge))
    return sub


def _runs_app() -> typer.Typer:
    """`runs [--json]` lists runs; `runs tail NAME` follows one."""
    from finetune.commands import runs, tail

    sub = _typer(_doc_parts(runs)[0], no_args_is_help=False, invoke_without_command=True)
    listing = _edge(runs)

    def callback(ctx: typer.Context, **kwargs: Any) -> None:
        if ctx.invoked_subcommand is None:
            listing(**kwargs)

    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=typer.Context)]
    callback.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        params + list(listing.__signature__.parameters.values()))
    sub.callback()(callback)
    sub.command("tail")(_edge(tail))
    return sub


def main(argv: list[str] | None = None) -> int:
    """`ragtune <command> ...`; returns the exit code (usage errors: 2)."""
    app = build_app()
    try:
        app(args=sys.argv[1:] if argv is None else argv, prog_name="ragtune")
    except SystemExit as done:  # standalone mode always ends in SystemExit
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def _short_form(command: str, argv: list[str] | None) -> int:
    return main([command, *(sys.argv[1:] if argv is None else argv)])


def ingest_main(argv: list[str] | None = None) -> int:
    """`ingest PATH...`: short form of `ragtune ingest`."""
    return _short_form("ingest", argv)


def finetune_main(argv: list[str] | None = None) -> int:
    """`finetune run|merge ...`: short form of `ragtune finetune ...`."""
    return _short_form("finetune", argv)


if __name__ == "__main__":
    sys.exit(main())
