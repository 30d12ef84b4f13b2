"""Streaming animation: audio pushed in chunks of any size -> frames as soon as their
look-ahead is complete, equal frame for frame to :func:`lsp_models.infer.predict.predict_motion`.

:class:`MelStream` computes prep's log-mel incrementally; :class:`AnimationStream` holds the
APC GRU, mouth LSTM and head-pose sampler states and bounded look-ahead buffers, so memory
stays flat in the audio's length.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lsp_models.constants import SAMPLING_TEMPERATURE
from lsp_models.infer.config import AnimateConfig
from lsp_models.infer.loading import Models, Person, pose_history, recorded_poses
from lsp_models.infer.motion import StreamSmoother, place_boxes, smoothing
from lsp_models.infer.predict import (
    amplify_pose,
    check_length,
    denormalise,
    encode_apc,
    feature_maps,
    frame_geometry,
    n_frames,
    pose_velocity,
    project_features,
    raw_centres,
    render,
    resized_candidates,
)
from lsp_models.sampling import FastHeadPoseSampler, HeadPoseSampler, make_sampler
from lsp_prep.constants import FPS, MELS_PER_FRAME, SAMPLE_RATE
from lsp_prep.errors import InputError
from lsp_prep.stages.audio import MelConfig, analysis_window, mel_basis


class MelStream:
    """Prep's log-mel computed as samples arrive: mel frame ``k`` (centred on sample
    ``round(k * sr / 120)``) is produced once every sample its window reads is in."""

    def __init__(self, *, sr: int = SAMPLE_RATE, fps: int = FPS, config: MelConfig = MelConfig()):
        self.sr, self.config = sr, config
        self.hop = sr / (fps * MELS_PER_FRAME)
        self.n_fft = config.n_fft
        win = int(round(config.win_s * sr))
        self.half = config.n_fft // 2
        start = (config.n_fft - win) // 2
        self.reach = -self.half + start + win  # samples after the centre the window reads
        self.window = analysis_window(config.n_fft, win).astype(np.float32)
        basis = mel_basis(sr, config.n_fft, config.n_mels, float(config.fmin), float(config.fmax))
        self.basis = basis.astype(np.float32)
        self.received = 0
        self.next = 0  # next mel frame
        self._buf = np.zeros(0, np.float32)
        self._buf0 = 0  # absolute index of _buf[0]

    def centre(self, k: int) -> int:
        return int(np.rint(k * self.hop))

    @property
    def lookahead_samples(self) -> int:
        return self.reach

    def push(self, y: np.ndarray) -> np.ndarray:
        """Samples (S,) in; mel frames (K, n_mels) whose windows are complete out."""
        self._buf = np.concatenate([self._buf, np.asarray(y, np.float32)])
        self.received += len(y)
        k_end = self.next
        while self.centre(k_end) + self.reach <= self.received:
            k_end += 1
        return self._frames(k_end)

    def finish(self, n_mel: int) -> np.ndarray:
        """The remaining frames up to ``n_mel`` (samples after the end are silence)."""
        return self._frames(max(n_mel, self.next))

    def _frames(self, k_end: int) -> np.ndarray:
        ks = np.arange(self.next, k_end)
        if len(ks) == 0:
            return np.zeros((0, self.config.n_mels), np.float32)
        centres = np.rint(ks * self.hop).astype(np.int64)
        lo = int(centres[0]) - self.half
        hi = int(centres[-1]) + self.half
        seg = np.zeros(hi - lo, np.float32)  # absolute samples lo .. hi - 1
        a, b = max(lo, self._buf0), min(hi, self._buf0 + len(self._buf))
        if b > a:
            seg[a - lo : b - lo] = self._buf[a - self._buf0 : b - self._buf0]
        windows = np.lib.stride_tricks.sliding_window_view(np.append(seg, 0.0), self.n_fft)
        frames = windows[centres - centres[0]] * self.window  # (K, n_fft)
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
        c = self.config
        mel = np.log(np.maximum(self.basis @ power.T.astype(np.float32), c.log_floor)).T
        self.next = k_end
        drop = max(0, self.centre(self.next) - self.half - self._buf0)
        self._buf, self._buf0 = self._buf[drop:], self._buf0 + drop
        return mel.astype(np.float32)


@dataclass
class AnimatedFrame:
    """One output frame of the stream."""

    index: int
    """Frame number at the stream's fps."""
    source: int
    """Frame number at 60 FPS."""
    feature_map: np.ndarray  # (S, S) uint8
    image: np.ndarray | None  # (S, S, 3) uint8 RGB; None when the stream does not render
    geometry: dict[str, np.ndarray]  # one frame of frame_geometry's arrays


class _Queue:
    """Arrays of consecutive frames, appended and taken from the front."""

    def __init__(self) -> None:
        self.items: list[np.ndarray] = []
        self.count = 0

    def put(self, x: np.ndarray) -> None:
        if len(x):
            self.items.append(x)
            self.count += len(x)

    def take(self, n: int) -> np.ndarray:
        data = np.concatenate(self.items)
        self.items = [data[n:]] if len(data) > n else []
        self.count -= n
        return data[:n]


STAGES = (
    "mel",
    "apc",
    "projection",
    "mouth",
    "headpose",
    "postprocess",
    "drawing",
    "renderer",
)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One torch thread on CPU for the motion stages: their batch-1 recurrences and small
    matmuls run faster alone than with a second thread to wake (2 cores: 0.93 -> 0.83 ms
    per frame at cpu-small); the renderer, outside, keeps every thread."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class AnimationStream:
    """Audio in chunks of any size -> frames as soon as their look-ahead is complete.

    ``push(samples)`` takes float32 16 kHz mono samples and returns the frames it completed;
    ``finish()`` flushes the rest (the last frame ends less than one frame after the audio).
    The output equals :func:`predict_motion` and :func:`render` of the whole audio, frame for
    frame. ``fps=30`` produces every other 60 FPS frame. ``render=False`` skips the renderer
    (feature maps and geometry only). ``timings`` holds seconds per stage.
    """

    def __init__(
        self,
        models: Models,
        person: Person,
        *,
        config: AnimateConfig,
        seed: int = 0,
        temperature: float = SAMPLING_TEMPERATURE,
        fps: int = FPS,
        pose_from: Path | None = None,
        render: bool = True,
    ) -> None:
        if fps not in (30, 60):
            raise InputError(f"fps must be 60 or 30, got {fps}")
        if not (isinstance(temperature, (int, float)) and temperature >= 0):
            raise InputError(f"temperature must be a number >= 0, got {temperature!r}")
        self.models, self.person, self.config = models, person, config
        self.fps, self.step = fps, FPS // fps
        self.render = render and models.generator is not None
        self.size = models.image_size
        self.timings = dict.fromkeys(STAGES, 0.0)
        self._mel = MelStream()
        self._mel_pending = np.zeros((0, self._mel.config.n_mels), np.float32)
        self._apc_state = None
        self._mouth_state = None
        self._n_feats = 0  # video frames with features
        self._n_real: int | None = None  # known at finish
        self._fed_mouth = 0
        self._n_pose = 0
        self._pose_from = pose_from
        if pose_from is None:
            history = torch.from_numpy(pose_history(models, person.path))[None].to(models.device)
            gen = torch.Generator(device=models.device).manual_seed(int(seed))
            self._sampler: HeadPoseSampler | FastHeadPoseSampler | None = make_sampler(
                models.headpose,
                history=history,
                temperature=temperature,
                generator=gen,
                velocity=pose_velocity(models),
            )
            rot_sigma, trans_sigma = config.rot_sigma, config.trans_sigma
        else:
            self._sampler = None
            rot_sigma = trans_sigma = 0.0  # recorded motion is replayed as it is
        f = smoothing(config, models.delay, person.rig.crop.smoothing_s * FPS)
        self._sm_mouth = StreamSmoother(**f["mouth"])
        self._sm_rot = StreamSmoother(**{**f["rot"], "sigma": rot_sigma})
        self._sm_trans = StreamSmoother(**{**f["trans"], "sigma": trans_sigma})
        self._sm_cam = StreamSmoother(**f["camera"])
        self._rot, self._trans = _Queue(), _Queue()
        self._mouth, self._pose, self._boxes = _Queue(), _Queue(), _Queue()
        self._n_centres = 0
        self._n_out = 0  # 60 FPS frames emitted
        self._cand = torch.from_numpy(resized_candidates(person, self.size)).to(models.device)
        self.lookahead_s = self._lookahead()

    def _lookahead(self) -> float:
        """Audio a frame waits for beyond its own end (seconds), compute excluded."""
        mouth = self.models.delay + self._sm_mouth.ahead
        pose = max(self._sm_rot.ahead, self._sm_trans.ahead) + self._sm_cam.ahead
        frames = max(mouth, pose)
        # frame i's last mel frame (2i + 1) is centred half a mel hop before the frame's end
        return frames / FPS + (self._mel.reach - self._mel.hop / 2) / SAMPLE_RATE

    # -- public

    def push(self, samples: np.ndarray) -> list[AnimatedFrame]:
        samples = np.asarray(samples, np.float32)
        if samples.ndim != 1:
            raise InputError(f"push expects mono samples (S,), got {samples.shape}")
        t = time.perf_counter()
        mel = self._mel.push(samples)
        self.timings["mel"] += time.perf_counter() - t
        return self._advance(mel)

    def finish(self) -> list[AnimatedFrame]:
        """Flush: the audio ended. InputError when it was shorter than one frame."""
        n = n_frames(self._mel.received)
        check_length(self._mel.received)
        self._n_real = n
        d = self.models.delay
        t = time.perf_counter()
        mel = self._mel.finish(MELS_PER_FRAME * (n + d))
        self.timings["mel"] += time.perf_counter() - t
        return self._advance(mel, final=True)

    # -- stages

    def _advance(self, mel: np.ndarray, final: bool = False) -> list[AnimatedFrame]:
        with _one_cpu_thread(self.models.device):
            self._motion(mel, final)
        return self._assemble()

    def _motion(self, mel: np.ndarray, final: bool) -> None:
        tm = self.timings
        self._mel_pending = np.concatenate([self._mel_pending, mel])
        usable = len(self._mel_pending) // MELS_PER_FRAME * MELS_PER_FRAME
        feats = np.zeros((0, 0), np.float32)
        if usable:
            t = time.perf_counter()
            mel_in = self._mel_pending[:usable]
            f, self._apc_state = encode_apc(self.models, mel_in, self._apc_state)
            self._mel_pending = self._mel_pending[usable:]
            tm["apc"] += time.perf_counter() - t
            t = time.perf_counter()
            feats = project_features(self.models, f, self.config)
            tm["projection"] += time.perf_counter() - t
        first = self._n_feats
        self._n_feats += len(feats)
        if len(feats):
            self._mouth_step(feats, first)
            self._pose_step(feats, first)
        if final:
            self._flush_smoothers()

    @torch.no_grad()
    def _mouth_step(self, feats: np.ndarray, first: int) -> None:
        t = time.perf_counter()
        m = self.models
        x = torch.from_numpy(feats.astype(np.float32))[None].to(m.device)
        out, self._mouth_state = m.mouth(x, self._mouth_state)
        out = out[0].cpu().numpy() + m.target_mean  # frames first - d .. first + T - 1 - d
        skip = max(0, m.delay - first)
        dv = out[skip:].reshape(-1, 25, 3)
        if self._n_real is not None:  # padding frames past the end predict nothing new
            dv = dv[: max(0, self._n_real - self._fed_mouth)]
        self._fed_mouth += len(dv)
        tm = self.timings
        tm["mouth"] += time.perf_counter() - t
        t = time.perf_counter()
        sm = self._sm_mouth.push(dv) * np.asarray(self.config.mouth_amp)
        self._mouth.put(sm.reshape(-1, 25, 3))
        tm["postprocess"] += time.perf_counter() - t

    @torch.no_grad()
    def _pose_step(self, feats: np.ndarray, first: int) -> None:
        n_real = self._n_real if self._n_real is not None else first + len(feats)
        feats = feats[: max(0, n_real - first)]
        if len(feats) == 0:
            return
        t = time.perf_counter()
        m = self.models
        if self._sampler is None:
            assert self._pose_from is not None
            pose = recorded_poses(self._pose_from, np.arange(first, first + len(feats)))
        else:
            audio = torch.from_numpy(feats.astype(np.float32)).to(m.device)
            if self._n_pose == 0:
                self._sampler.prime(audio[:1])
            cond = m.headpose.condition(audio)  # (T, L, 2G): one matmul per chunk
            out = self._sampler.steps(cond[None])[0]  # (T, P)
            pose = amplify_pose(m, denormalise(m, out.cpu().numpy()), self.config)
        self._n_pose += len(pose)
        self.timings["headpose"] += time.perf_counter() - t
        t = time.perf_counter()
        self._rot.put(self._sm_rot.push(pose[:, :3]))
        self._trans.put(self._sm_trans.push(pose[:, 3:]))
        self._camera_step()
        self.timings["postprocess"] += time.perf_counter() - t

    def _camera_step(self, final: bool = False) -> None:
        n = min(self._rot.count, self._trans.count)
        if n:
            pose = np.concatenate([self._rot.take(n), self._trans.take(n)], axis=1)
            frames = np.arange(self._n_centres, self._n_centres + n)
            self._n_centres += n
            self._pose.put(pose)
            self._boxes.put(self._sm_cam.push(raw_centres(self.person, frames, pose)))
        if final:
            self._boxes.put(self._sm_cam.finish())

    def _flush_smoothers(self) -> None:
        t = time.perf_counter()
        self._mouth.put(
            self._sm_mouth.finish().reshape(-1, 25, 3) * np.asarray(self.config.mouth_amp)
        )
        self._rot.put(self._sm_rot.finish())
        self._trans.put(self._sm_trans.finish())
        self._camera_step(final=True)
        self.timings["postprocess"] += time.perf_counter() - t

    def _assemble(self) -> list[AnimatedFrame]:
        n = min(self._mouth.count, self._pose.count, self._boxes.count)
        if n == 0:
            return []
        t = time.perf_counter()
        frames = np.arange(self._n_out, self._n_out + n)
        mouth, pose = self._mouth.take(n), self._pose.take(n)
        boxes = place_boxes(self._boxes.take(n), self.person.rig)
        self._n_out += n
        keep = frames % self.step == 0
        geo = frame_geometry(
            self.person, frames[keep], mouth[keep], pose[keep], boxes[keep], config=self.config
        )
        maps = feature_maps(geo["face2d"], geo["shoulders2d"], size=self.size)
        self.timings["drawing"] += time.perf_counter() - t
        images: np.ndarray | None = None
        if self.render:
            t = time.perf_counter()
            images = render(self.models, maps, self._cand, config=self.config)
            self.timings["renderer"] += time.perf_counter() - t
        out = []
        for j, src in enumerate(frames[keep]):
            out.append(
                AnimatedFrame(
                    index=int(src) // self.step,
                    source=int(src),
                    feature_map=maps[j],
                    image=None if images is None else images[j],
                    geometry={k: v[j] for k, v in geo.items()},
                )
            )
        return out
