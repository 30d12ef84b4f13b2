"""The same step as :class:`~lsp_models.sampling.cached.HeadPoseSampler` in a few numpy calls
per layer: what ``lsp animate`` samples with on the CPU."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from lsp_models.nets.headpose import GatedLayer, HeadPoseModel
from lsp_models.sampling.draws import PoseGain, check_temperature, warm_start
from lsp_prep.errors import InputError


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
        velocity: Tensor | None = None,
    ) -> None:
        check_temperature(temperature)
        param = next(model.parameters())
        if not fast_ok(model):
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
        self._velocity = None if velocity is None else velocity.numpy().astype(self._np_dtype)
        self._gain = PoseGain(model, self._stream[:, -1])
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
        self._residual = c.pose_dim // 2 if c.pose_residual else 0  # dims whose mean adds the pose

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
        with one_blas_thread():
            for t in range(T):
                out[t] = self._step(c[t])
        # on the way out: the poses fed back stay unscaled
        return self._gain(torch.from_numpy(out.transpose(1, 0, 2).copy()))

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
        if self._residual:  # the previous pose (times keep) plus the network's output
            k = self._residual
            mean[:, :k] += self.model.keep * self._pose_view[:, :k]
        np.minimum(nls, self.model.max_neg_log_sigma, out=nls)
        if self.temperature == 0:
            pose = mean
        else:
            eps = torch.randn(mean.shape, generator=self.generator, dtype=self._dtype).numpy()
            pose = mean + self.temperature * np.exp(-nls) * eps
        if self._velocity is not None:  # as with_velocity: from the pose half and the last
            k = pose.shape[1] // 2
            pose[:, k:] = (pose[:, :k] - self._pose_view[:, :k]) * self._velocity[0]
            pose[:, k:] += self._velocity[1]
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


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """numpy's BLAS on one thread inside: a batch-1 step's matrix-vector products are a few
    microseconds, and waking a second BLAS thread for each costs more than it saves (paper
    size 2x slower on 2 busy cores). A no-op without threadpoolctl."""
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def fast_ok(model: HeadPoseModel) -> bool:
    """Whether :class:`FastHeadPoseSampler` can run ``model``: on the CPU in float32/64."""
    param = next(model.parameters())
    return param.device.type == "cpu" and param.dtype in (torch.float32, torch.float64)
