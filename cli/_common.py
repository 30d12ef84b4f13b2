"""What every command shares: one stderr console, error handling, progress bars."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from typer.core import TyperCommand, TyperGroup

from lsp_prep.errors import LSPError

console = Console(stderr=True)
"""All human-facing output goes to stderr; stdout stays free for data."""


class LspCommand(TyperCommand):
    """Every ``lsp`` command's class: a usage line in plain metavars (``lsp prep [OPTIONS]
    VIDEO...``, not Typer's ``{videos}...``), no ``<bool>`` beside a flag and no
    ``<list[Path]>`` beside an argument (its metavar says it). Non-flag options name their
    metavar where they are declared (DIR, FILE, KEY=VALUE...); tests/test_cli_options.py
    checks that no help page shows a Typer type label."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help and "\n\nExamples:" in self.help:
            # Typer dedents the help after its first paragraph by the indent of all its
            # lines but the first: when "Examples:" leads that text, the examples would lose
            # their indent. A blank line in front makes the heading count.
            self.help = self.help.replace("\n\nExamples:", "\n\n\nExamples:", 1)
        for param in self.params:
            if param.param_type_name == "argument":
                # Typer prints an argument's Python type beside its metavar; the metavar is
                # what a user types, so the type column stays empty (setattr: a method).
                setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010
            elif getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # a flag takes no value: no <bool>

    def get_help_option(self, ctx: Any) -> Any:
        return _flag(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue  # options are [OPTIONS]
            name = param.metavar or (param.name or "").upper()
            if param.nargs != 1 and not name.endswith("..."):
                name += "..."
            pieces.append(name if param.required else f"[{name}]")
        return pieces


class LspGroup(TyperGroup):
    """``lsp`` and ``lsp train``: their flags (--help, --version) without ``<bool>``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""

    def get_help_option(self, ctx: Any) -> Any:
        return _flag(super().get_help_option(ctx))


def _flag(option: Any) -> Any:
    """The --help option with no metavar (a flag takes no value)."""
    if option is not None:
        option.metavar = ""
    return option


def old_spellings(renamed: dict[str, str]) -> dict[str, Any]:
    """``context_settings`` for a command that renamed options: ``{"-o": "--output"}``
    keeps ``-o`` working for one more release, with a one-line deprecation warning on
    stderr. Click passes every option token through ``token_normalize_func`` (prefix
    stripped, then put back), so the old spelling reaches the new option's declaration and
    never shows in --help. An attached short value (``-ox.mp4``) is not recognised."""
    table = {old.lstrip("-"): (old, new) for old, new in renamed.items()}

    def normalize(name: str) -> str:
        if name not in table:
            return name
        old, new = table[name]
        console.print(
            f"[yellow]deprecated:[/] {old} is now {new}; {old} will be removed in the next release",
            highlight=False,
            soft_wrap=True,
        )
        prefix = old[: len(old) - len(name)]
        return new[len(prefix) :]  # the parser puts the old prefix back in front

    return {"token_normalize_func": normalize}


@contextmanager
def cli_errors(verbose: bool = False) -> Iterator[None]:
    """Turn the library's exceptions into one red line and exit code 1."""
    try:
        yield
    except LSPError as exc:
        if verbose:
            console.print_exception()
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] run the same command again to resume")
        raise typer.Exit(130) from None


@contextmanager
def shown_warnings() -> Iterator[None]:
    """Print each UserWarning raised inside the block (the toolkit's) as one yellow line
    when it ends; other categories (ResourceWarning, ...) stay hidden as by default."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("default", UserWarning)
        try:
            yield
        finally:
            for w in caught:
                console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)


@contextmanager
def stage_progress(enabled: bool = True) -> Iterator:
    """A rich progress display; yields a ``progress(stage, done, total)`` callback."""
    if not enabled or os.environ.get("LSP_NO_PROGRESS"):
        yield lambda stage, done, total: None
        return
    columns = (
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


@contextmanager
def clip_progress(enabled: bool = True) -> Iterator:
    """Progress of several clips at once, one bar per clip (its current stage); yields a
    ``progress(clip, stage, done, total)`` callback that any thread may call."""
    if not enabled or os.environ.get("LSP_NO_PROGRESS"):
        yield lambda clip, stage, done, total: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def update(clip: str, stage: str, done: int, total: int | None) -> None:
            if clip not in tasks:
                tasks[clip] = bar.add_task(clip, total=total)
            bar.update(tasks[clip], description=f"{clip}: {stage:<9}", completed=done, total=total)

        yield update
