"""One meaning per option across every ``lsp`` command, clean help pages with examples that
parse, and the renamed options' old spellings still working (with a warning) for a release.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from cli.main import app
from lsp_prep import __version__

ROOT = typer.main.get_command(app)
RUNNER = CliRunner()


def _commands(group: Any = ROOT, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf command by its path: ("prep",), ("train", "apc"), ..."""
    out = {}
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out.update(_commands(cmd, (*path, name)))
        else:
            out[(*path, name)] = cmd
    return out


COMMANDS = _commands()
PATHS = sorted(COMMANDS)


def _options(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if p.param_type_name == "option" and not p.hidden]


def _meanings() -> dict[str, set[tuple[str, bool]]]:
    """Option spelling -> every (parameter name, is a flag) it stands for, over all commands."""
    seen: dict[str, set[tuple[str, bool]]] = {}
    for cmd in COMMANDS.values():
        for p in _options(cmd):
            for spelling in (*p.opts, *p.secondary_opts):
                seen.setdefault(spelling, set()).add((p.name, bool(p.is_flag)))
    return seen


MEANINGS = _meanings()

RENAMED = {
    ("prep",): ("--out", "--out-dir"),
    ("animate",): ("-o", "--output"),
    ("report",): ("-o", "--output"),
    ("eval",): ("--json", "--output"),
}
"""Old spelling -> new, accepted with a warning for one release."""


def deprecation(old: str, new: str) -> str:
    return f"deprecated: {old} is now {new}; {old} will be removed in the next release"


def _help(path: tuple[str, ...]) -> str:
    r = RUNNER.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_one_meaning_per_option(path):
    """Each spelling this command uses means the same parameter (and the same kind: flag
    or value) in every command; an output directory is --out-dir/-o and an output file
    --output wherever they appear."""
    for p in _options(COMMANDS[path]):
        for spelling in (*p.opts, *p.secondary_opts):
            assert MEANINGS[spelling] == {(p.name, bool(p.is_flag))}, (spelling, path)
        if p.name == "out_dir":
            assert p.opts == ["--out-dir", "-o"], path
        if p.name == "output":
            assert p.opts == ["--output"], path
    assert MEANINGS["-o"] == {("out_dir", False)}
    assert MEANINGS["--output"] == {("output", False)}


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_help_is_clean_and_its_examples_parse(path):
    """No Typer type labels (<bool>, <path>, {videos}) in the help; an Examples block whose
    every line is this command with options it has, in their current spelling."""
    text = _help(path)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "<" not in usage, usage
    for label in ("<bool>", "<path>", "<str>", "<int>", "<float>", "<list", "<Path"):
        assert label not in text, (label, path)
    assert "Examples:" in text
    lines = [ln.strip() for ln in text.split("Examples:")[1].split("╭")[0].splitlines()]
    examples = [shlex.split(ln) for ln in lines if ln]
    assert examples, path
    cmd = COMMANDS[path]
    spellings = {s for p in cmd.params for s in (*p.opts, *p.secondary_opts)}
    for words in examples:
        assert words[: 1 + len(path)] == ["lsp", *path], words
        for word in words:
            if word.startswith("-"):
                assert word in spellings, (word, path)
        old = RENAMED.get(path, (None,))[0]
        assert old not in words, words


def test_version_from_one_place():
    """lsp --version prints lsp_prep.__version__, which pyproject reads as the package's."""
    import tomllib

    r = RUNNER.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"lsp {__version__}"
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lsp_prep.__version__"}


@pytest.mark.parametrize(
    "args",
    [
        ["prep", "{missing}", "{spelling}", "{tmp}/data"],
        ["animate", "-r", "{tmp}/norun", "--audio", "{missing}", "{spelling}", "{tmp}/x.mp4"],
        ["eval", "-r", "{tmp}/norun", "{spelling}", "{tmp}/e.json"],
        ["report", "{missing}", "{spelling}", "{tmp}/r.html"],
    ],
    ids=lambda a: a[0],
)
def test_old_spelling_parses_like_the_new_one(lsp, tmp_path, args):
    """The old spelling is accepted, warns in one line, and reaches the same option: the
    command fails on its (missing) input exactly as with the new spelling."""
    old, new = RENAMED[(args[0],)]

    def run(spelling: str) -> Any:
        fill = {"{missing}": str(tmp_path / "missing.mp4"), "{spelling}": spelling}
        words = [fill.get(a, a).replace("{tmp}", str(tmp_path)) for a in args]
        return lsp(*words)

    before, after = run(new), run(old)
    assert before.exit_code == after.exit_code == 1, (before.output, after.output)
    assert deprecation(old, new) not in before.output
    first, *rest = after.output.splitlines()
    assert first == deprecation(old, new)
    assert "\n".join(rest) == before.output.rstrip("\n")
    assert not any(tmp_path.iterdir())  # nothing written under either spelling


def test_report_old_spelling_writes_there(lsp, synthetic_copy, tmp_path):
    page = tmp_path / "page.html"
    r = lsp("report", synthetic_copy, "-o", page, "--no-progress")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == deprecation("-o", "--output")
    assert page.stat().st_size > 10_000
    assert not synthetic_copy.with_suffix(".html").exists()


def test_animate_and_eval_old_spellings_write_there(lsp, trained_run, speech_wav, tmp_path):
    """A real animate with -o and a real eval with --json: files where the old spelling
    said, each command's first line the deprecation."""
    from tests.conftest import ffmpeg

    short = tmp_path / "short.wav"
    ffmpeg("-i", str(speech_wav), "-t", "0.4", str(short))
    video = tmp_path / "talk.mp4"
    r = lsp("animate", "-r", trained_run, "--audio", short, "-o", video, "--fps", 30)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == deprecation("-o", "--output")
    assert video.stat().st_size > 0 and (tmp_path / "talk.mp4.json").is_file()
    report = tmp_path / "eval.json"
    args = ["--max-frames", "1", "--seeds", "1", "--device", "cpu", "--json", report]
    r = lsp("eval", "-r", trained_run, *args, "--no-progress")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == deprecation("--json", "--output")
    assert json.loads(report.read_text())["image"]["frames"] == 1
