"""The ``lsp`` command line: thin commands over the library's plain functions."""

from __future__ import annotations

import typer

from cli.animate import animate
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
)
app.command()(prep)
app.add_typer(train_app, name="train")
app.command()(animate)
app.command(name="eval")(eval_command)
app.command(name="report")(report_command)
app.command(name="convert-run")(convert_run)


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
    app()


if __name__ == "__main__":
    main()
