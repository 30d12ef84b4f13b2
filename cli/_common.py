"""What every command shares: one stderr console, error handling, progress bars."""

from __future__ import annotations

import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

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


Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show the traceback of an error (for reports).")
]
"""The ``--verbose`` option every command has: without it no traceback reaches the user."""

RESUME_HINT = "run the same command again to resume"
"""What an interrupted prep or training can do (their work is cached or checkpointed)."""

EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""Exit code after each handled signal: 128 + the signal's number, as shells report it."""

_received: list[int] = []
"""Signals received while a command runs (see :func:`handled_signals`)."""


def check_interrupted() -> None:
    """Raise KeyboardInterrupt when a signal arrived during the command; called by every
    progress callback, so an interrupt that some library swallowed (a KeyboardInterrupt
    raised inside a finaliser is only printed as "Exception ignored in ...") still stops
    the work at the next progress step."""
    if _received:
        raise KeyboardInterrupt


def exit_on_signals() -> None:
    """SIGINT or SIGTERM outside a command's :func:`handled_signals` (while the command line
    is parsed, nothing has been done yet, or while the summary prints): one line and exit
    130 or 143 at once. Without it Typer ends silently, or Python prints a traceback."""

    def quit_now(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        console.print(f"[yellow]interrupted ({name})[/]", highlight=False)
        raise SystemExit(EXIT_CODES.get(signum, 130))

    for sig in EXIT_CODES:
        signal.signal(sig, quit_now)


@contextmanager
def handled_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so every ``finally``
    and ``except BaseException`` cleanup runs (temporary files removed) on either; they are
    remembered for :func:`check_interrupted`. Outside the main thread (where Python allows
    no handlers) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: object) -> None:
        _received.append(signum)
        raise KeyboardInterrupt

    before = {sig: signal.signal(sig, on_signal) for sig in EXIT_CODES}
    _received.clear()
    try:
        yield
        check_interrupted()  # work that ran on past a swallowed interrupt is not a success
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@contextmanager
def cli_errors(
    verbose: bool = False, *, interrupted: str | Callable[[], str] = RESUME_HINT
) -> Iterator[None]:
    """Turn the library's exceptions into one red line and exit code 1, any other error
    into one line too (its traceback only with ``verbose``), and SIGINT or SIGTERM into one
    line (``interrupted`` says what the user can do, or returns it when the interrupt
    comes: what was done by then) and exit code 130 or 143."""
    try:
        with handled_signals():
            yield
    except Exception as exc:
        if _received:  # whatever broke after a signal broke because of it (an ImportError
            # when a C extension's start-up was interrupted): the user stopped the command
            _stop(interrupted, verbose=verbose)
        _fail(exc, verbose=verbose)
    except KeyboardInterrupt:
        _stop(interrupted, verbose=False)


def _stop(interrupted: str | Callable[[], str], *, verbose: bool) -> NoReturn:
    """One line for the signal received (SIGINT if none was), exit 130 or 143."""
    if callable(interrupted):
        interrupted = interrupted()
    if verbose:
        console.print_exception()
    sig = _received[0] if _received else signal.SIGINT
    name = signal.Signals(sig).name
    console.print(f"[yellow]interrupted ({name}):[/] {interrupted}", highlight=False)
    raise typer.Exit(EXIT_CODES.get(sig, 130)) from None


def _fail(exc: Exception, *, verbose: bool) -> NoReturn:
    """One red line for ``exc`` (its traceback only with ``verbose``), exit 1; Typer's own
    exits pass through."""
    if isinstance(exc, (typer.Exit, typer.Abort, typer.TyperException)):
        raise exc
    if isinstance(exc, LSPError):
        if verbose:
            console.print_exception()
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    # a bug or an unforeseen failure: still one line by default
    if verbose:
        console.print_exception()
    text = " ".join(str(exc).split()) or "no message"
    console.print(
        f"[bold red]error:[/] unexpected {type(exc).__name__}: {text} (run again with "
        "--verbose for the traceback, and please report it)",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1) from None


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
        yield lambda stage, done, total: check_interrupted()
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
            check_interrupted()
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
