"""What the package declares against what it uses: the torch floor, the numpy bound, one
version, and the pre-commit hooks beside `make test`.

The torch floor cannot be tested by installing the oldest torch here: this machine's disk
holds only torch 2.13.0 (CPU) and 2.14.1 (CUDA), and any other release is a download of
1-2 GB. So :data:`TORCH_API_SINCE` lists every torch API the toolkit uses that is younger
than 1.13, with the release that introduced it; the tests check that each is still used
(so the table does not keep the floor up for nothing), that each exists in the installed
torch, and that pyproject's floor is the newest of them. A new use of a recent torch API
has to be added to the table by hand: grep cannot know which release an API came in.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SOURCES = ("lsp_models", "lsp_prep", "lsp_report", "cli")

TORCH_API_SINCE = {
    # pattern in the source: (the torch attribute it needs, the release that brought it)
    'torch.amp.GradScaler("cuda"': ("amp.GradScaler", "2.3"),  # device-generic scaler
    "from torch.func import functional_call": ("func.functional_call", "2.0"),
    "prefetch_factor=config.prefetch if workers else None": ("utils.data.DataLoader", "2.0"),
    "weights_only=True": ("load", "1.13"),
    "torch.autocast(": ("autocast", "1.10"),
}
"""Torch APIs the toolkit relies on and the release each first appeared in (release notes;
DataLoader took prefetch_factor=None with num_workers=0 from 2.0 on)."""


def _requirement(name: str) -> Requirement:
    found = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    return next(r for r in found if r.name == name)


def _source_text() -> str:
    return "\n".join(
        p.read_text() for folder in SOURCES for p in sorted((ROOT / folder).rglob("*.py"))
    )


def test_torch_is_a_range_whose_floor_is_the_newest_api_used():
    torch = _requirement("torch")
    specs = {s.operator: s.version for s in torch.specifier}
    assert list(specs) == [">="], f"torch must be a floor, not {torch.specifier}"
    newest = max(Version(since) for _, since in TORCH_API_SINCE.values())
    assert Version(specs[">="]) == newest


@pytest.mark.parametrize("pattern", sorted(TORCH_API_SINCE))
def test_each_listed_torch_api_is_used_and_present(pattern):
    import torch

    assert pattern in _source_text(), f"{pattern!r} is no longer used: drop it from the table"
    obj = torch
    for part in TORCH_API_SINCE[pattern][0].split("."):
        obj = getattr(obj, part)
    assert Version(torch.__version__.split("+")[0]) >= Version(TORCH_API_SINCE[pattern][1])


def test_installed_torch_satisfies_the_range():
    import torch

    assert _requirement("torch").specifier.contains(torch.__version__.split("+")[0])


def test_numpy_bounded_only_as_mediapipe_requires():
    """numpy<2 only while mediapipe's own metadata requires it."""
    numpy = _requirement("numpy")
    ours = {s.operator + s.version for s in numpy.specifier}
    mediapipe = [Requirement(r) for r in metadata.requires("mediapipe") or []]
    theirs = next(r for r in mediapipe if r.name == "numpy")
    upper = {s.operator + s.version for s in theirs.specifier if s.operator.startswith("<")}
    assert {s for s in ours if s.startswith("<")} == upper == {"<2"}
    assert str(_requirement("mediapipe").specifier) == "==0.10.21"


def test_makefile_pins_torch_for_this_machine_only():
    """The CPU wheel on this machine's disk is installed first by the Makefile; the package
    itself keeps whatever torch>=floor is already there."""
    make = (ROOT / "Makefile").read_text()
    pin = make.index("pip install --quiet torch==2.13.0")
    assert pin < make.index('pip install --quiet -e ".[test,dev]"')
    assert not re.search(r"torch\s*==", " ".join(PYPROJECT["project"]["dependencies"]))


def test_pre_commit_runs_what_make_test_runs():
    import yaml

    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]
    entries = [h["entry"].replace(".venv/bin/", "$(BIN)/") for h in hooks]
    make = (ROOT / "Makefile").read_text()
    lint = [ln.strip() for ln in make.split("test: $(STAMP)")[1].splitlines()[1:4]]
    assert [e + (" ." if "ruff" in e else "") for e in entries] == lint
    dev = {Requirement(r).name for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert dev == {"ruff", "mypy", "pre-commit"}


@pytest.mark.slow  # pip builds the package's metadata: about 10 s
def test_pip_install_keeps_the_installed_torch(tmp_path):
    """pip's resolver, offline, on this package in this venv: only the toolkit itself would
    be installed, the torch already here is kept (README, Installing; a venv holding the
    CUDA build of torch 2.14.1 was checked by hand the same way)."""
    import json
    import subprocess
    import sys

    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index"]
    cmd += ["--no-build-isolation", "--quiet", "--report", str(report), str(ROOT)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    installs = json.loads(report.read_text())["install"]
    assert [i["metadata"]["name"] for i in installs] == ["lsp-toolkit"]
