"""Running the head-pose model autoregressively: three samplers with the same draws.

``sample_naive`` recomputes the whole causal network over the last ``receptive_field``
inputs for every frame; ``sample`` (and the streaming :class:`HeadPoseSampler` it is built
on) keeps WaveNet's "fast generation" queues, the last ``(kernel_size - 1) * dilation``
inputs of every layer, so a frame costs one pass through the layers at one time step. With
the same generator both give the same poses. :class:`FastHeadPoseSampler` (``sample_fast``,
``make_sampler``; what ``lsp animate`` uses on the CPU) runs that same step in a few numpy
calls per layer: equal to ``sample`` up to rounding order, with the same draws, and several
times cheaper per frame at batch 1.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from lsp_models.nets.headpose import GatedLayer, HeadPoseConfig, HeadPoseModel
from lsp_prep.errors import InputError


@torch.no_grad()
def sample(
    model: HeadPoseModel,
    audio: Tensor,
    *,
    history: Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample a pose sequence for ``audio`` (B, T, A), frame by frame (fast, cached).

    ``history`` is the pose feature before the first frame: (B, P), or (B, H, P) oldest
    first. It is replicated back to fill the receptive field, with ``audio[:, 0]`` as
    the audio of those frames (the official inference's warm start). Each sampled
    12-dim feature is fed back as it is, velocities included; a caller that wants
    consistent velocities recomputes them from the poses afterwards. ``temperature``
    scales sigma (0 gives the mean path; the official inference uses 0.3).
    ``generator`` must live on ``audio``'s device; one (B, P) normal draw per frame.

    Returns: (B, T, P) sampled pose features of frames 0 .. T - 1.
    """
    _check_audio(audio, model.config)
    sampler = HeadPoseSampler(model, history=history, temperature=temperature, generator=generator)
    return _run_sampler(sampler, model, audio)


@torch.no_grad()
def sample_fast(
    model: HeadPoseModel,
    audio: Tensor,
    *,
    history: Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Same contract and same draws as ``sample``, through ``make_sampler``: on the CPU
    the numpy ``FastHeadPoseSampler`` (equal up to rounding order, several times
    cheaper per frame), elsewhere ``HeadPoseSampler`` itself."""
    _check_audio(audio, model.config)
    sampler = make_sampler(model, history=history, temperature=temperature, generator=generator)
    return _run_sampler(sampler, model, audio)


@torch.no_grad()
def sample_naive(
    model: HeadPoseModel,
    audio: Tensor,
    *,
    history: Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Same contract and same draws as ``sample``, but each frame reruns the whole
    network over its last ``receptive_field`` inputs: the reference ``sample`` is
    checked against, and the baseline of ``benchmark_samplers``."""
    B, T, _ = _check_audio(audio, model.config)
    R = model.receptive_field
    pose_in = audio.new_empty(B, R - 1 + T, model.config.pose_dim)  # input stream
    pose_in[:, :R] = warm_start(history, R, model.config)
    audio_in = torch.cat([audio[:, :1].expand(B, R - 1, -1), audio], dim=1)  # (B, R-1+T, A)
    out = audio.new_empty(B, T, model.config.pose_dim)
    for t in range(T):  # frame t is stream index R - 1 + t
        mean, nls = model.predict(pose_in[:, t : t + R], audio_in[:, t : t + R], dropout=False)
        out[:, t] = draw(mean[:, -1], nls[:, -1], temperature, generator)
        if t + 1 < T:
            pose_in[:, R + t] = out[:, t]
    return out


def _check_temperature(temperature: object) -> None:
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise InputError(f"temperature must be a number >= 0, got {temperature!r}")


class HeadPoseSampler:
    """Streaming sampler: holds every layer's queue and the last pose; ``step`` one frame.

    ``step(audio_t (B, A)) -> pose_t (B, P)``. The queues are filled from the warm start
    (``history`` replicated back, the first frame's audio) on the first ``step`` or an
    explicit ``prime``. Dropout is never applied, whatever the model's mode.
    """

    def __init__(
        self,
        model: HeadPoseModel,
        *,
        history: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_temperature(temperature)
        self.model = model
        self.temperature = float(temperature)
        self.generator = generator
        self.n = 0  # frames produced so far
        self._stream = warm_start(history, model.receptive_field, model.config)  # (B, R, P)
        self._pose_prev = self._stream[:, -1]  # (B, P)
        self._queues: list[Tensor] | None = None

    @torch.no_grad()
    def prime(self, audio_0: Tensor) -> None:
        """Fill the queues from the warm start, with ``audio_0`` (B, A) as its audio."""
        model, stream = self.model, self._stream
        B, R, _ = stream.shape
        assert audio_0.shape == (B, model.config.audio_dim), (
            f"audio_0 should be {(B, model.config.audio_dim)}, got {tuple(audio_0.shape)}"
        )
        cond = model.condition(audio_0)[:, None].expand(B, R - 1, -1, -1)  # (B, R-1, L, 2G)
        x = model.pose_in(stream[:, :-1])  # (B, R-1, R_ch): frames -R+1 .. -1
        self._queues = []
        for i, layer in enumerate(model.layers):
            self._queues.append(x[:, x.shape[1] - layer.history :].clone())  # (B, history, R_ch)
            x, _ = layer(x, cond[:, :, i])

    @torch.no_grad()
    def step(self, audio_t: Tensor) -> Tensor:
        """audio_t (B, A), the audio feature of the next frame -> its sampled pose (B, P)."""
        if self._queues is None:
            self.prime(audio_t)
        return self.step_cond(self.model.condition(audio_t))

    @torch.no_grad()
    def step_cond(self, cond_t: Tensor) -> Tensor:
        """``step`` from precomputed conditioning cond_t (B, n_layers_total, 2G)."""
        assert self._queues is not None, "call prime() (or step()) first"
        model = self.model
        x = model.pose_in(self._pose_prev)  # (B, R)
        skip: Tensor | None = None
        for i, (layer, queue) in enumerate(zip(model.layers, self._queues, strict=True)):
            x, s = cast(GatedLayer, layer).step(x, cond_t[:, i], queue, self.n)  # (B, R), (B, S)
            skip = s if skip is None else skip + s
        assert skip is not None
        mean, nls = model.head(skip)  # (B, P) each
        pose = draw(mean, nls, self.temperature, self.generator)
        self._pose_prev = pose
        self.n += 1
        return pose

    @torch.no_grad()
    def steps(self, cond: Tensor) -> Tensor:
        """``step_cond`` for each of T frames: cond (B, T, n_layers_total, 2G) -> (B, T, P)."""
        return torch.stack([self.step_cond(cond[:, t]) for t in range(cond.shape[1])], dim=1)


class FastHeadPoseSampler:
    """``HeadPoseSampler``'s contract at a fraction of its per-frame cost, on CPU.

    A batch-1 step through 14 gated layers is some 170 tiny torch ops, each microseconds of
    dispatch; this sampler runs the same step as about 9 numpy calls per layer on weights
    rearranged once at construction (so it does not see later weight updates):

    - each layer's queue holds its past inputs already multiplied by their dilated-conv taps
      (``(kernel_size - 1) * 2G`` per entry), so a step is one matmul of the current input
      by ``[W_current | W_past...]``, whose past half is queued for later steps;
    - the dilated conv's bias is folded into the conditioning, once per chunk;
    - ``sigmoid(g) = (1 + tanh(g / 2)) / 2``: one tanh over filter and (pre-halved) gate,
      the 1/2 folded into the 1x1 output conv;
    - the gated activations of all layers are written side by side with a trailing 1, so
      the residual biases ride in the residual matmuls and all skips plus their biases are
      one matmul before the post-net.

    The arithmetic is the same up to rounding order (float64: ~1e-15; float32: ~1e-6 per
    frame, which an autoregressive chain may grow), and the normal draws are the same torch
    calls: one ``torch.randn((B, P), generator=...)`` per frame, none at temperature 0, so a
    seed means what it means for ``HeadPoseSampler``. ``tests/test_models_headpose.py``
    checks the two agree. The model must be float32 or float64, on the CPU.
    """

    def __init__(
        self,
        model: HeadPoseModel,
        *,
        history: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_temperature(temperature)
        param = next(model.parameters())
        if not _fast_ok(model):
            raise InputError(
                f"FastHeadPoseSampler needs a float32 or float64 model on the CPU, got "
                f"{param.dtype} on {param.device}: use HeadPoseSampler (or make_sampler)"
            )
        self.model = model
        self.temperature = float(temperature)
        self.generator = generator
        self.n = 0  # frames produced so far
        self._stream = warm_start(history, model.receptive_field, model.config)  # (B, R, P)
        self._dtype = param.dtype
        self._weights(model)
        B = self._stream.shape[0]
        c, L, G = model.config, model.n_gated, model.config.gate_channels
        dt = self._np_dtype
        self._pose = np.ones((B, c.pose_dim + 1), dt)  # last pose, then a 1 for the bias
        self._pose[:, :-1] = self._stream[:, -1].detach().numpy()
        self._pose_view = self._pose[:, :-1]
        # work buffers, written in place every step (numpy's out=: no allocation per op)
        self._x = np.empty((B, c.residual_channels), dt)
        self._h = np.empty((B, 2 * G), dt)
        self._hf, self._hg = self._h[:, :G], self._h[:, G:]
        self._one = np.ones((B, G), dt)
        self._z = np.ones((B, L, G + 1), dt)  # gated activations (doubled), then a 1
        self._z_flat = self._z.reshape(B, L * (G + 1))
        self._r = np.empty((B, c.residual_channels), dt)
        self._skip = np.empty((B, c.skip_channels), dt)
        self._hid = np.empty((B, c.skip_channels), dt)
        self._head = np.empty((B, 2 * c.pose_dim), dt)
        self._mean, self._nls = self._head[:, : c.pose_dim], self._head[:, c.pose_dim :]
        self._queues: list[np.ndarray] | None = None
        self._plan: list[tuple[Any, ...]] = []

    @torch.no_grad()
    def _weights(self, model: HeadPoseModel) -> None:
        c, G = model.config, model.config.gate_channels
        R, k = c.residual_channels, c.kernel_size
        f = lambda t: t.detach().numpy().copy()  # noqa: E731
        self._np_dtype = f(next(model.parameters())).dtype
        half = np.ones(2 * G, self._np_dtype)
        half[G:] = 0.5  # tanh(g / 2) for sigmoid(g): exact, a power of two
        self._half = half
        self._w_in = np.concatenate([f(model.pose_in.weight).T, f(model.pose_in.bias)[None]])
        self._wcat, self._wres, bdil, wskip = [], [], [], []
        for layer in model.layers:
            layer = cast(GatedLayer, layer)
            w = f(layer.dilated.weight).T * half  # (k * R, 2G), taps oldest first
            # current tap first, then lags 1 .. k-1: [W_{k-1} | W_{k-2} | ... | W_0]
            self._wcat.append(
                np.ascontiguousarray(
                    np.concatenate([w[j * R : (j + 1) * R] for j in range(k - 1, -1, -1)], 1)
                )
            )
            bdil.append(f(layer.dilated.bias))
            wo = np.concatenate([f(layer.out.weight).T * 0.5, f(layer.out.bias)[None]])
            self._wres.append(np.ascontiguousarray(wo[:, :R]))  # (G + 1, R)
            wskip.append(wo[:, R:])  # (G + 1, S)
        self._wskip = np.ascontiguousarray(np.concatenate(wskip))  # (L * (G + 1), S)
        lin1, lin2 = cast(nn.Linear, model.post[1]), cast(nn.Linear, model.post[3])
        self._w1, self._b1 = np.ascontiguousarray(f(lin1.weight).T), f(lin1.bias)
        self._w2, self._b2 = np.ascontiguousarray(f(lin2.weight).T), f(lin2.bias)
        self._bdil = np.stack(bdil)  # (L, 2G), added to the conditioning
        self._dil = [cast(GatedLayer, layer).dilation for layer in model.layers]

    @torch.no_grad()
    def prime(self, audio_0: Tensor) -> None:
        """Fill the queues from the warm start, with ``audio_0`` (B, A) as its audio."""
        model, stream = self.model, self._stream
        B, R, _ = stream.shape
        assert audio_0.shape == (B, model.config.audio_dim), (
            f"audio_0 should be {(B, model.config.audio_dim)}, got {tuple(audio_0.shape)}"
        )
        k, G2 = model.config.kernel_size, 2 * model.config.gate_channels
        cond = model.condition(audio_0)[:, None].expand(B, R - 1, -1, -1)  # (B, R-1, L, 2G)
        x = model.pose_in(stream[:, :-1])  # (B, R-1, R_ch): frames -R+1 .. -1
        self._queues = []
        for i, layer in enumerate(model.layers):
            h = cast(GatedLayer, layer).history
            past = x[:, x.shape[1] - h :].numpy() @ self._wcat[i][:, G2:]  # (B, h, (k-1) 2G)
            # the input at time m in slot m % h: times -h .. -1 are slots 0 .. h - 1
            q = np.ascontiguousarray(past.reshape(B, h, k - 1, G2).transpose(1, 0, 2, 3))
            self._queues.append(q)  # (h, B, k - 1, 2G)
            x, _ = layer(x, cond[:, :, i])
        self._plan = []  # per layer: weights, buffers and the views step writes through
        for i, (w, q) in enumerate(zip(self._wcat, self._queues, strict=True)):
            y = np.empty((B, w.shape[1]), w.dtype)
            y_past = y[:, G2:].reshape(B, k - 1, G2)
            zi1 = self._z[:, i]
            self._plan.append(
                (w, y, y[:, :G2], y_past, q, self._dil[i], zi1[:, :-1], zi1, self._wres[i])
            )

    @torch.no_grad()
    def step(self, audio_t: Tensor) -> Tensor:
        """audio_t (B, A), the audio feature of the next frame -> its sampled pose (B, P)."""
        if self._queues is None:
            self.prime(audio_t)
        return self.step_cond(self.model.condition(audio_t))

    def step_cond(self, cond_t: Tensor) -> Tensor:
        """``step`` from precomputed conditioning cond_t (B, n_layers_total, 2G)."""
        return self.steps(cond_t[:, None])[:, 0]

    @torch.no_grad()
    def steps(self, cond: Tensor) -> Tensor:
        """``step_cond`` for each of T frames: cond (B, T, n_layers_total, 2G) -> (B, T, P)."""
        assert self._queues is not None, "call prime() (or step()) first"
        B, T = cond.shape[:2]
        P = self.model.config.pose_dim
        # (T, B, L, 2G): the dilated conv's bias and the halved gate folded in, once
        c = (cond.detach().numpy().transpose(1, 0, 2, 3) + self._bdil) * self._half
        out = np.empty((T, B, P), self._np_dtype)
        with _one_blas_thread():
            for t in range(T):
                out[t] = self._step(c[t])
        return torch.from_numpy(out.transpose(1, 0, 2).copy())

    def _step(self, c: np.ndarray) -> np.ndarray:
        """One frame: c (B, L, 2G) prepared conditioning -> pose (B, P)."""
        n, x, h, hf, hg, one, r = self.n, self._x, self._h, self._hf, self._hg, self._one, self._r
        np.dot(self._pose, self._w_in, out=x)  # (B, R)
        for i, (w, y, y_cur, y_past, q, d, zi, zi1, w_res) in enumerate(self._plan):
            hist = len(q)
            np.dot(x, w, out=y)  # (B, k 2G): current tap, then this input's past taps
            np.add(y_cur, c[:, i], out=h)
            for m in range(q.shape[2]):  # lag m + 1: the input (m + 1) d steps ago
                np.add(h, q[(n - (m + 1) * d) % hist, :, m], out=h)
            q[n % hist] = y_past  # after reading: the slot of the oldest input
            np.tanh(h, out=h)
            np.add(hg, one, out=hg)
            np.multiply(hf, hg, out=zi)  # 2 tanh(filter) sigmoid(gate)
            np.dot(zi1, w_res, out=r)  # (B, R), bias included
            np.add(x, r, out=x)
        skip, hid, head = self._skip, self._hid, self._head
        np.dot(self._z_flat, self._wskip, out=skip)  # (B, S), every layer's bias included
        np.maximum(skip, 0.0, out=skip)
        np.dot(skip, self._w1, out=hid)
        np.add(hid, self._b1, out=hid)
        np.maximum(hid, 0.0, out=hid)
        np.dot(hid, self._w2, out=head)
        np.add(head, self._b2, out=head)
        mean, nls = self._mean, self._nls
        np.minimum(nls, self.model.max_neg_log_sigma, out=nls)
        if self.temperature == 0:
            pose = mean
        else:
            eps = torch.randn(mean.shape, generator=self.generator, dtype=self._dtype).numpy()
            pose = mean + self.temperature * np.exp(-nls) * eps
        self._pose_view[...] = pose
        self.n += 1
        return pose


@functools.cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController  # with scikit-learn, via librosa
    except ImportError:  # pragma: no cover - only speed depends on it
        return None
    return ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """numpy's BLAS on one thread inside: a batch-1 step's matrix-vector products are a few
    microseconds, and waking a second BLAS thread for each costs more than it saves (paper
    size 2x slower on 2 busy cores). A no-op without threadpoolctl."""
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def make_sampler(
    model: HeadPoseModel,
    *,
    history: Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> HeadPoseSampler | FastHeadPoseSampler:
    """The cheapest streaming sampler for the model: ``FastHeadPoseSampler`` on the CPU in
    float32/float64, ``HeadPoseSampler`` otherwise (on a GPU a step is kernel launches either
    way). Both have ``prime``, ``step``, ``step_cond`` and ``steps``."""
    kw: dict[str, Any] = {"history": history, "temperature": temperature, "generator": generator}
    return FastHeadPoseSampler(model, **kw) if _fast_ok(model) else HeadPoseSampler(model, **kw)


def _fast_ok(model: HeadPoseModel) -> bool:
    param = next(model.parameters())
    return param.device.type == "cpu" and param.dtype in (torch.float32, torch.float64)


def _run_sampler(
    sampler: HeadPoseSampler | FastHeadPoseSampler, model: HeadPoseModel, audio: Tensor
) -> Tensor:
    """Prime ``sampler`` with audio (B, T, A)'s first frame and sample all: (B, T, P)."""
    cond = model.condition(audio)  # (B, T, L, 2G), one matmul for the whole clip
    sampler.prime(audio[:, 0])
    return sampler.steps(cond)


def warm_start(history: Tensor, receptive_field: int, config: HeadPoseConfig) -> Tensor:
    """The pose inputs of the ``receptive_field`` frames ending at frame 0: (B, R, P).

    history (B, P) or (B, H, P), oldest first: its last pose is frame 0's input (the pose of
    frame -1); older inputs are earlier history, then its first pose repeated.
    """
    if history.dim() == 2:
        history = history[:, None]
    if history.dim() != 3 or history.shape[-1] != config.pose_dim or history.shape[1] < 1:
        raise InputError(
            f"history must be (B, {config.pose_dim}) or (B, H, {config.pose_dim}) with H >= 1, "
            f"got {tuple(history.shape)}"
        )
    history = history[:, -receptive_field:]
    pad = receptive_field - history.shape[1]
    return torch.cat([history[:, :1].expand(-1, pad, -1), history], dim=1)


def draw(
    mean: Tensor, neg_log_sigma: Tensor, temperature: float, generator: torch.Generator | None
) -> Tensor:
    """One sample of Normal(mean, temperature * sigma); temperature 0 returns the mean and
    draws nothing. mean, neg_log_sigma (B, P) -> (B, P)."""
    if temperature == 0:
        return mean.clone()
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + temperature * (-neg_log_sigma).exp() * eps


def _check_audio(audio: Tensor, config: HeadPoseConfig) -> tuple[int, int, int]:
    if audio.dim() != 3 or audio.shape[-1] != config.audio_dim or audio.shape[1] < 1:
        raise InputError(
            f"audio must be (B, T, {config.audio_dim}) with T >= 1, got {tuple(audio.shape)}"
        )
    B, T, A = audio.shape
    return B, T, A
