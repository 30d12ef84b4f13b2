"""ffmpeg I/O of ``animate``: audio decoded in chunks (:func:`iter_audio`), frames encoded
to H.264 + AAC mp4, mov or mkv (:class:`VideoWriter`), and the checks on the paths given."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lsp_prep.constants import SAMPLE_RATE
from lsp_prep.dataset.writer import remove_stale_temporaries
from lsp_prep.errors import InputError, ToolError
from lsp_prep.media import ffmpeg_exe, probe
from lsp_prep.signals import deferred_signals

CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
"""Output extensions that carry H.264 + AAC, and ffmpeg's muxer for each."""


def container(path: Path) -> str:
    """ffmpeg's muxer for ``path``'s extension; InputError for one not in :data:`CONTAINERS`."""
    suffix = Path(path).suffix.lower()
    if suffix not in CONTAINERS:
        raise InputError(
            f"{path}: cannot write {suffix or 'a file without an extension'} (H.264 + AAC): "
            f"name the output {', '.join(CONTAINERS)}, e.g. --output {Path(path).stem or 'out'}.mp4"
        )
    return CONTAINERS[suffix]


class VideoWriter:
    """Frames (uint8 RGB) streamed into ffmpeg's stdin -> H.264 yuv420p with the audio of
    ``audio`` muxed as AAC, in the container ``path``'s extension names (:data:`CONTAINERS`).
    Written to a temporary name beside ``path`` and renamed by ``close()`` only when ffmpeg
    succeeded; ``abort()`` (or an exception inside a ``with`` block) removes it. ToolError
    carries ffmpeg's stderr."""

    def __init__(
        self,
        path: Path,
        *,
        fps: int,
        size: int,
        audio: Path | None,
        gray: bool = False,
        crf: int = 18,
        preset: str = "veryfast",
    ) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}{self.path.suffix}")
        remove_stale_temporaries(self.path, name=self.path.stem, suffix=self.path.suffix)
        self.frames = 0
        self.seconds = 0.0
        self._err = tempfile.TemporaryFile()
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
        cmd += ["-f", "rawvideo", "-pix_fmt", "gray" if gray else "rgb24"]
        cmd += ["-s", f"{size}x{size}", "-framerate", str(fps), "-i", "pipe:0"]
        if audio is not None:
            cmd += [
                "-i",
                str(audio),
                "-map",
                "0:v:0",
                "-map",
                "1:a:0",
                "-c:a",
                "aac",
                "-b:a",
                "160k",
            ]
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
        muxer = container(self.path)
        if muxer != "matroska":
            cmd += ["-movflags", "+faststart"]
        cmd += ["-f", muxer, str(self.tmp)]
        self.closed = False
        # an interrupt while Popen starts ffmpeg would leave it running without a handle,
        # writing the temporary file after we are gone: it is delivered once we hold one
        try:
            with deferred_signals():
                self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._err)
        except BaseException:
            if hasattr(self, "_proc"):
                self.abort()
            raise

    def write(self, frames: np.ndarray) -> None:
        """frames (B, S, S, 3) or (B, S, S) uint8."""
        t = time.perf_counter()
        stdin = typing.cast(typing.IO[bytes], self._proc.stdin)
        try:
            stdin.write(np.ascontiguousarray(frames, np.uint8).tobytes())
        except (BrokenPipeError, OSError):
            self._fail()
        self.frames += len(frames)
        self.seconds += time.perf_counter() - t

    def close(self) -> Path:
        t = time.perf_counter()
        try:
            typing.cast(typing.IO[bytes], self._proc.stdin).close()
        except (BrokenPipeError, OSError):
            pass
        if self._proc.wait() != 0:
            self._fail()
        with deferred_signals():
            os.replace(self.tmp, self.path)
            self.closed = True
        self._err.close()
        self.seconds += time.perf_counter() - t
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and remove what it wrote; after :meth:`close` this removes the
        finished file (a later step of the caller failed)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self.tmp.unlink(missing_ok=True)
        if self.closed:
            self.path.unlink(missing_ok=True)
            self.closed = False
        self._err.close()

    def _fail(self) -> typing.NoReturn:
        if self._proc.poll() is None:
            self._proc.kill()
        rc = self._proc.wait()
        self._err.seek(0)
        err = self._err.read().decode(errors="replace").strip()
        self.abort()
        tail = " | ".join(err.splitlines()[-5:]) or "no message"
        raise ToolError(f"ffmpeg failed writing {self.path} ({rc}): {tail}")

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def iter_audio(path: Path, *, chunk: int, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Decode ``path``'s first audio stream to mono float32 at ``sr`` in chunks of ``chunk``
    samples (the last may be shorter), through an ffmpeg pipe: memory flat in length."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path)]
    cmd += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sr), "-f", "f32le", "pipe:1"]
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
    stdout = typing.cast(typing.IO[bytes], proc.stdout)
    done = False
    try:
        while True:
            buf = stdout.read(4 * chunk)
            if not buf:
                break
            yield np.frombuffer(buf[: len(buf) // 4 * 4], "<f4").astype(np.float32)
        done = True
    finally:
        if not done:
            proc.kill()
        rc = proc.wait()
        err.seek(0)
        msg = err.read().decode(errors="replace").strip()
        err.close()
        if done and rc != 0:
            raise InputError(
                f"{path}: cannot decode the audio ({' | '.join(msg.splitlines()[-3:])})"
            )


def check_audio(path: Path) -> float:
    """Refuse what is not readable audio; return its duration in seconds (0 if unknown)."""
    info = probe(Path(path))
    if not info.has_audio:
        raise InputError(f"{path}: has no audio stream (give a speech recording: wav, mp3, ...)")
    return info.duration_s


def check_output(path: Path) -> None:
    """InputError unless ``path`` names a container of :data:`CONTAINERS` and its folder
    exists or can be made, and is writable."""
    container(path)
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lsp-write-test-"):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot write the output {path}: {folder} is not a writable folder ({exc.strerror})"
        ) from None
    if Path(path).is_dir():
        raise InputError(f"{path} is a folder: give the output file, e.g. --output out.mp4")
