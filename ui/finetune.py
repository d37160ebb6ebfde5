"""The Fine-tune tab (a small LLaMA-Factory-style board): pick a config and dataset, edit the
main knobs, see the exact command line, start and stop it as a subprocess of the UI, and
follow the loss curve, the log tail and the list of runs. Runs locally, not through the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from ragtune.errors import RagtuneError
from ui.runs import (KNOBS, RunManager, check_board_paths, check_config_file, command_line, config_files,
                     dataset_names, finetune_argv, knobs_from, list_runs, loss_rows, run_log,
                     tail, validate)

RUN_COLUMNS = ["name", "status", "stage", "step", "max_steps", "loss", "eval_loss",
               "tokens_per_s", "updated"]
NO_CONFIG = "(defaults)"


@dataclass
class FinetuneTab:
    config: gr.Dropdown
    knobs: dict[str, gr.components.Component]
    command: gr.Code
    start: gr.Button
    stop: gr.Button
    status: gr.Markdown
    runs: gr.Dataframe
    run: gr.Dropdown
    loss: gr.LinePlot
    log: gr.Code
    timer: gr.Timer


def _config_path(choice: str | None) -> Path | None:
    """The config as the command names it (relative to the board's root, its working dir)."""
    return None if not choice or choice == NO_CONFIG else Path(choice)


def _empty_loss() -> Any:
    """No data yet: an empty plot (an empty DataFrame draws a broken legend)."""
    return None


class Board:
    """The board's handlers, bound to one workspace and one RunManager."""

    def __init__(self, workspace: Path, root: Path,
                 guard: Callable[[], None] | None = None) -> None:
        self.workspace, self.root = Path(workspace), Path(root)
        self.manager = RunManager(self.workspace, cwd=self.root)
        self.guard = guard or (lambda: None)  # raises RagtuneError for a non-admin visitor

    def _under_root(self, value: str | Path | None, default: Path) -> Path:
        path = Path(value) if value else default
        return path if path.is_absolute() else self.root / path

    def _file(self, choice: str | None) -> Path | None:
        """The config file to read (a relative choice is under the root)."""
        path = _config_path(choice)
        return path if path is None or path.is_absolute() else self.root / path

    def _validate(self, choice: str | None, knobs: dict[str, Any]) -> Any:
        """The run's config, its files only from the allowed folders (else ConfigError)."""
        path = self._file(choice)
        if path is not None:
            check_config_file(path, self.workspace, self.root)
        cfg = validate(path, knobs)
        check_board_paths(cfg, path, self.workspace, self.root)
        return cfg

    def initial(self, choice: str | None) -> tuple[dict[str, Any], str]:
        """(knob values, problem) of a config file, the defaults when it cannot be read."""
        try:
            values, problem = knobs_from(self._file(choice)), ""
        except RagtuneError as err:
            values, problem = knobs_from(None), f"⚠️ {err}"
        values["dataset_dir"] = values.get("dataset_dir") or str(self.workspace / "datasets")
        values["dataset"] = [d.strip() for d in str(values.get("dataset") or "").split(",")
                             if d.strip()]
        return values, problem

    def load_config(self, choice: str | None) -> list[Any]:
        """Fill the knobs from the picked config file (or the defaults)."""
        values, problem = self.initial(choice)
        if problem:
            return [gr.update() for _ in KNOBS] + [problem]
        return [values.get(k) for k in KNOBS] + [""]

    def preview(self, choice: str | None, *values: Any) -> tuple[str, str]:
        """(command line, problem): the exact command, or why it would be refused."""
        knobs = dict(zip(KNOBS, values, strict=True))
        try:
            self.guard()
            argv = finetune_argv(_config_path(choice), knobs, self.workspace)
            self._validate(choice, knobs)
        except RagtuneError as err:
            return "", f"⚠️ {err}"
        return command_line(argv, wrap=True), ""

    def dataset_choices(self, dataset_dir: str | None) -> list[str]:
        """Datasets registered in the folder (relative folders are under the root)."""
        return dataset_names(self._under_root(dataset_dir, self.workspace / "datasets"))

    def datasets(self, dataset_dir: str | None) -> Any:
        return gr.update(choices=self.dataset_choices(dataset_dir))

    def start(self, choice: str | None, *values: Any) -> tuple[str, Any]:
        """Validate, then start the run; the selected run becomes the new one."""
        knobs = dict(zip(KNOBS, values, strict=True))
        try:
            self.guard()
            cfg = self._validate(choice, knobs)
            started = self.manager.start(cfg.name, finetune_argv(_config_path(choice), knobs,
                                                                 self.workspace))
        except RagtuneError as err:
            return f"⚠️ {err}", gr.update()
        except OSError as err:
            return f"⚠️ could not start the run: {err}", gr.update()
        names = self._run_names() + [started.name]
        return (f"▶ started run **{started.name}** (pid {started.pid}); log: "
                f"`{started.log_file}`", gr.update(choices=sorted(set(names)), value=started.name))

    def stop(self, name: str | None) -> str:
        if not name:
            return "Pick a run to stop."
        try:
            self.guard()
            return "⏹ " + self.manager.stop(name)
        except RagtuneError as err:
            return f"⚠️ {err}"

    def _run_names(self) -> list[str]:
        try:
            return [r["name"] for r in list_runs(self.workspace / "runs")]
        except (RagtuneError, OSError):
            return []

    def runs_table(self) -> Any:
        try:
            rows = list_runs(self.workspace / "runs")
        except (RagtuneError, OSError) as err:
            return gr.update(value=[[f"⚠️ {err}"] + [""] * (len(RUN_COLUMNS) - 1)])
        return gr.update(value=[[r.get(c) if r.get(c) is not None else "" for c in RUN_COLUMNS]
                                for r in rows] or None)

    def watch(self, name: str | None) -> tuple[Any, str, Any, Any]:
        """(loss plot, log tail, runs table, run choices) for the selected run."""
        import pandas as pd

        try:
            self.guard()
        except RagtuneError as err:
            return _empty_loss(), f"⚠️ {err}", gr.update(), gr.update()
        names = sorted(set(self._run_names()) | set(self.manager.running()))
        choices = gr.update(choices=names)
        if not name:
            return _empty_loss(), "", self.runs_table(), choices
        run_dir = self.workspace / "runs" / name
        rows = loss_rows(run_dir)
        plot = pd.DataFrame(rows) if rows else _empty_loss()
        started = self.manager.started(name)
        log_file = started.log_file if started else run_log(run_dir)
        text = tail(log_file)
        if started and self.manager.poll(name) is not None:
            text += f"\n-- process exited with code {self.manager.poll(name)}"
        return plot, text, self.runs_table(), choices


def build_finetune_tab(workspace: Path, root: Path,
                       guard: Callable[[], None] | None = None) -> FinetuneTab:
    """The Fine-tune tab's layout and events (inside an open `gr.Tab`); `guard` refuses
    visitors without the admin role."""
    board = Board(workspace, root, guard)
    configs = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
               for p in config_files(root)]
    first, problem = board.initial(configs[0] if configs else None)
    with gr.Row():
        config = gr.Dropdown([NO_CONFIG, *configs], value=configs[0] if configs else NO_CONFIG,
                             label="Config (configs/finetune/*.yaml)", elem_id="rt-ft-config")
        knobs: dict[str, Any] = {
            "name": gr.Textbox(first["name"], label="Run name", elem_id="rt-ft-name"),
            "stage": gr.Dropdown(["sft", "dpo", "kto"], value=first["stage"], label="Stage"),
            "model": gr.Textbox(first["model"], label="Base model"),
        }
    with gr.Row():
        knobs["dataset_dir"] = gr.Textbox(first["dataset_dir"], label="Dataset folder "
                                          "(with dataset_info.json)")
        knobs["dataset"] = gr.Dropdown(board.dataset_choices(first["dataset_dir"]),
                                       value=first["dataset"], label="Datasets",
                                       multiselect=True, allow_custom_value=True,
                                       elem_id="rt-ft-dataset")
    with gr.Row():
        knobs["learning_rate"] = gr.Number(first["learning_rate"], label="learning_rate")
        knobs["num_train_epochs"] = gr.Number(first["num_train_epochs"], label="epochs")
        knobs["max_steps"] = gr.Number(first["max_steps"], precision=0,
                                       label="max_steps (-1: use epochs)")
        knobs["cutoff_len"] = gr.Number(first["cutoff_len"], precision=0, label="cutoff_len")
    with gr.Row():
        knobs["lora_rank"] = gr.Number(first["lora_rank"], precision=0, label="LoRA rank")
        knobs["lora_alpha"] = gr.Number(first["lora_alpha"], precision=0, label="LoRA alpha")
        knobs["per_device_batch_size"] = gr.Number(first["per_device_batch_size"], precision=0,
                                                   label="batch size")
        knobs["gradient_accumulation_steps"] = gr.Number(
            first["gradient_accumulation_steps"], precision=0, label="grad. accumulation")
    command = gr.Code(board.preview(config.value, *[first[k] for k in KNOBS])[0],
                      language="shell", label="Command line", interactive=False,
                      elem_id="rt-ft-command")
    status = gr.Markdown(problem, elem_id="rt-ft-status")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="rt-ft-start")
        stop = gr.Button("Stop", variant="stop", elem_id="rt-ft-stop")
    with gr.Row():
        run = gr.Dropdown(board._run_names(), label="Run", allow_custom_value=True,
                          elem_id="rt-ft-run")
        refresh = gr.Button("↻ Refresh")
    with gr.Row():
        loss = gr.LinePlot(None, x="step", y="loss", color="series",
                           title="Loss", height=300)
        log = gr.Code("", label="Log (tail)", language=None, interactive=False, max_lines=24)
    runs = gr.Dataframe(headers=RUN_COLUMNS, label="Runs", interactive=False)
    timer = gr.Timer(2.0, active=False)  # switched on while the tab is shown (ui.app)
    tab = FinetuneTab(config, knobs, command, start, stop, status, runs, run, loss, log, timer)
    _wire(board, tab, refresh)
    return tab


def _wire(board: Board, tab: FinetuneTab, refresh: gr.Button) -> None:
    knob_inputs = [tab.knobs[k] for k in KNOBS]
    tab.config.change(board.load_config, [tab.config], [*knob_inputs, tab.status],
                      api_name=False)
    for component in [tab.config, *knob_inputs]:
        component.change(board.preview, [tab.config, *knob_inputs], [tab.command, tab.status],
                         api_name=False)
    tab.knobs["dataset_dir"].change(board.datasets, [tab.knobs["dataset_dir"]],
                                    [tab.knobs["dataset"]], api_name=False)
    tab.start.click(board.start, [tab.config, *knob_inputs], [tab.status, tab.run],
                    api_name="finetune_start")
    tab.stop.click(board.stop, [tab.run], [tab.status], api_name="finetune_stop")
    watch_outputs = [tab.loss, tab.log, tab.runs, tab.run]
    tab.timer.tick(board.watch, [tab.run], watch_outputs, api_name=False,
                   show_progress="hidden")
    refresh.click(board.watch, [tab.run], watch_outputs, api_name=False)
    tab.run.change(board.watch, [tab.run], watch_outputs, api_name=False)
