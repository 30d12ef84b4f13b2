"""The ``lsp`` command line: thin commands over the library's plain functions."""

from __future__ import annotations

import typer

from cli._common import LspCommand, LspGroup, exit_on_signals, old_spellings
from cli.animate import animate
from cli.doctor import doctor
from cli.eval import eval_command
from cli.prep import prep
from cli.report import report_command
from cli.train import app as train_app
from cli.train import convert_run
from lsp_prep import __version__

app = typer.Typer(
    name="lsp",
    help="Live Speech Portraits toolkit: prep a video, train a person's models, animate speech.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LspGroup,
)
# Renamed options keep their old spelling for one release (a warning says so): an output
# directory is --out-dir/-o everywhere, an output file --output.
app.command(cls=LspCommand, context_settings=old_spellings({"--out": "--out-dir"}))(prep)
app.add_typer(train_app, name="train")
app.command(cls=LspCommand, context_settings=old_spellings({"-o": "--output"}))(animate)
app.command(name="eval", cls=LspCommand, context_settings=old_spellings({"--json": "--output"}))(
    eval_command
)
app.command(name="report", cls=LspCommand, context_settings=old_spellings({"-o": "--output"}))(
    report_command
)
app.command(name="convert-run", cls=LspCommand)(convert_run)
app.command(cls=LspCommand)(doctor)


def _version(value: bool) -> None:
    if value:
        print(f"lsp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Live Speech Portraits toolkit."""


def main() -> None:
    exit_on_signals()
    app()


if __name__ == "__main__":
    main()
