"""Head-pose WaveNet: receptive field, samplers, training, temperature, config checks."""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
import torch

from benchmarks.bench_models import benchmark_samplers
from lsp_models.nets.headpose import HeadPoseConfig, HeadPoseModel
from lsp_models.sampling import (
    FastHeadPoseSampler,
    HeadPoseSampler,
    make_sampler,
    sample,
    sample_fast,
    sample_naive,
    velocity_map,
)
from lsp_prep.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = HeadPoseConfig.cpu_small()


def small_model(seed: int = 0, **overrides) -> HeadPoseModel:
    torch.manual_seed(seed)
    return HeadPoseModel(HeadPoseConfig.cpu_small(**overrides)).double().eval()


def inputs(B: int, T: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(B, T, SMALL.pose_dim, generator=g, dtype=torch.float64)
    audio = torch.randn(B, T, SMALL.audio_dim, generator=g, dtype=torch.float64)
    return pose, audio


def test_paper_receptive_field_is_255_frames():
    cfg = HeadPoseConfig.paper()
    assert cfg.dilations == (1, 2, 4, 8, 16, 32, 64) * 2
    assert cfg.receptive_field == 1 + 2 * (2**7 - 1) == 255
    assert SMALL.receptive_field == 255


def test_output_depends_on_exactly_the_last_255_inputs():
    """Poses reach 254 frames back; the audio of a frame enters after the first dilated
    conv, so it reaches 253 back (as in the official WaveNet's local conditioning)."""
    model = small_model()
    pose, audio = inputs(2, 300)
    pose.requires_grad_(True)
    audio.requires_grad_(True)
    t = 280
    mean, nls = model(pose, audio)
    assert mean.shape == nls.shape == (2, 300, SMALL.pose_dim)
    (mean[:, t].sum() + nls[:, t].sum()).backward()
    for name, grad, oldest in (("pose_prev", pose.grad, t - 254), ("audio", audio.grad, t - 253)):
        per_frame = grad.abs().sum(dim=(0, 2))  # (T,)
        seen = torch.nonzero(per_frame).flatten().tolist()
        assert seen == list(range(oldest, t + 1)), f"{name}: frames seen {seen[0]}..{seen[-1]}"


def test_perturbing_future_or_too_old_inputs_leaves_the_output_alone():
    model = small_model()
    pose, audio = inputs(1, 300)
    t = 280
    with torch.no_grad():
        mean, nls = model(pose, audio)

        def out_after(frame: int) -> tuple[torch.Tensor, torch.Tensor]:
            p, a = pose.clone(), audio.clone()
            p[:, frame] += 1.0
            a[:, frame] += 1.0
            return model(p, a)

        m2, n2 = out_after(t + 1)  # future: nothing up to t changes, bit for bit
        assert torch.equal(m2[:, : t + 1], mean[:, : t + 1])
        assert torch.equal(n2[:, : t + 1], nls[:, : t + 1])
        m3, n3 = out_after(t - 255)  # 255 frames back: outside the receptive field
        assert torch.equal(m3[:, t:], mean[:, t:]) and torch.equal(n3[:, t:], nls[:, t:])
        m4, _ = out_after(t - 200)  # well inside
        assert (m4[:, t] - mean[:, t]).abs().max() > 1e-9
    # (at exactly 254 frames back the effect is ~1e-15 at initialisation: the gradient test
    # above checks that edge exactly)


def test_parameter_counts():
    paper = HeadPoseModel(HeadPoseConfig.paper()).num_params()
    small = HeadPoseModel(SMALL).num_params()
    print(f"headpose parameters: paper {paper:,}, cpu-small {small:,}")
    # the official model (with its BatchNorm audio pre-net) has about 4.3 M
    assert 3_000_000 < paper < 6_000_000
    assert 50_000 < small < 200_000


# slow: the naive reference re-runs the whole window for each of 300 frames (~3 s a case on
# 2 cores); test_samplers_agree_in_float32_too keeps a short naive comparison in the fast tier
@pytest.mark.slow
@pytest.mark.parametrize("history_len", [None, 5, 400])
def test_cached_sampler_equals_naive_sampler(history_len):
    model = small_model()
    B, T = 2, 300
    pose, audio = inputs(B, T + 400)
    audio = audio[:, :T]
    history = pose[:, 0] if history_len is None else pose[:, :history_len]
    fast = sample(model, audio, history=history, generator=torch.Generator().manual_seed(7))
    slow = sample_naive(model, audio, history=history, generator=torch.Generator().manual_seed(7))
    assert fast.shape == slow.shape == (B, T, SMALL.pose_dim)
    assert (fast - slow).abs().max().item() < 1e-5
    assert fast.std() > 0.1  # the samples are not stuck at a constant


def test_samplers_agree_in_float32_too():
    torch.manual_seed(0)
    model = HeadPoseModel(SMALL).eval()
    audio = torch.randn(1, 60, SMALL.audio_dim)
    history = torch.zeros(1, SMALL.pose_dim)
    args = {"history": history, "temperature": 0.3}
    fast = sample(model, audio, generator=torch.Generator().manual_seed(3), **args)
    slow = sample_naive(model, audio, generator=torch.Generator().manual_seed(3), **args)
    assert (fast - slow).abs().max().item() < 1e-4


def test_streaming_steps_equal_sample():
    model = small_model()
    pose, audio = inputs(3, 50)
    history = pose[:, :4]
    whole = sample(model, audio, history=history, generator=torch.Generator().manual_seed(1))
    sampler = HeadPoseSampler(model, history=history, generator=torch.Generator().manual_seed(1))
    steps = torch.stack([sampler.step(audio[:, t]) for t in range(50)], dim=1)
    assert steps.shape == (3, 50, SMALL.pose_dim)
    assert (steps - whole).abs().max().item() < 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature", [0.3, 1.0])
def test_fast_sampler_equals_cached_sampler(dtype, temperature):
    """The numpy sampler animate uses against the torch reference, 500 frames, same draws."""
    torch.manual_seed(0)
    model = HeadPoseModel(SMALL).to(dtype).eval()
    pose, audio = inputs(2, 500)
    pose, audio = pose.to(dtype), audio.to(dtype)
    history = pose[:, :9]
    args = {"history": history, "temperature": temperature}
    ref = sample(model, audio, generator=torch.Generator().manual_seed(4), **args)
    fast = sample_fast(model, audio, generator=torch.Generator().manual_seed(4), **args)
    assert fast.shape == ref.shape == (2, 500, SMALL.pose_dim) and fast.dtype == dtype
    # relative: an untrained residual model wanders far, and rounding grows with the values
    assert (fast - ref).abs().max().item() < 1e-5 * max(1.0, ref.abs().max().item())
    assert ref.std() > 0.1


def test_samplers_feed_back_velocities_of_their_poses():
    """With ``velocity`` every sampled feature's velocity half is the difference of its pose
    half and the frame before's, in the normalised units training uses, the first against
    the history's last pose; the three samplers agree on it, draw for draw."""
    model = small_model()
    pose, audio = inputs(1, 80)
    history = pose[:, :6]
    mean = torch.linspace(-0.2, 0.3, 12, dtype=torch.float64).numpy()
    std = torch.linspace(0.5, 2.0, 12, dtype=torch.float64).numpy()
    velocity = velocity_map(mean, std)
    args = {"history": history, "temperature": 0.7, "velocity": velocity}
    ref = sample(model, audio, generator=torch.Generator().manual_seed(5), **args)
    naive = sample_naive(model, audio, generator=torch.Generator().manual_seed(5), **args)
    fast = sample_fast(model, audio, generator=torch.Generator().manual_seed(5), **args)
    assert (naive - ref).abs().max().item() < 1e-8
    assert (fast - ref).abs().max().item() < 1e-8 * max(1.0, ref.abs().max().item())
    raw = ref[0].numpy() * std + mean  # (T, 12) poses and velocities in radians and cm
    before = history[0, -1].numpy() * std + mean
    steps = (
        raw[:, :6]
        - torch.cat([torch.from_numpy(before[None, :6]), torch.from_numpy(raw[:-1, :6])]).numpy()
    )
    assert abs(raw[:, 6:] - steps).max() < 1e-9
    drawn = sample(
        model, audio, history=history, temperature=0.7, generator=torch.Generator().manual_seed(5)
    )
    assert (drawn[..., 6:] - ref[..., 6:]).abs().max().item() > 0.1  # without: as drawn


def test_velocity_feedback_is_the_models_choice():
    """animate and lsp eval feed velocities of the poses back only to a model configured
    for it (headpose.velocity_feedback); checkpoints without the key sample as before."""
    from types import SimpleNamespace

    from lsp_models.infer.predict import pose_velocity
    from lsp_prep.configtree import from_data

    mean, std = torch.zeros(12).numpy(), torch.full((12,), 2.0).numpy()
    for flag, expected in ((False, None), (True, velocity_map(mean, std))):
        config = HeadPoseConfig.cpu_small(velocity_feedback=flag)
        models = SimpleNamespace(
            headpose=SimpleNamespace(config=config), pose_mean=mean, pose_std=std
        )
        got = pose_velocity(models)  # type: ignore[arg-type]
        assert got is None if expected is None else torch.equal(got, expected)
    old = {k: v for k, v in vars(HeadPoseConfig.cpu_small()).items() if k != "velocity_feedback"}
    assert from_data(HeadPoseConfig, old).velocity_feedback is False
    message = "headpose.velocity_feedback must be true or false, got 1"
    with pytest.raises(InputError, match=re.escape(message)):
        HeadPoseConfig(velocity_feedback=1)  # type: ignore[arg-type]


def test_range_gain_scales_what_the_samplers_return_not_what_they_feed_back():
    """A calibrated model (headpose.range_calibration) returns the pose half times its
    ``pose_gain``; the poses fed back, so every later draw, are the uncalibrated ones: the
    three samplers give the uncalibrated samples with the pose half scaled, velocities as
    they were. Without the option the buffers are not in the state dict (old checkpoints
    load)."""
    model = small_model(velocity_feedback=True, range_calibration=True)
    plain = small_model(velocity_feedback=True)
    assert "pose_gain" in model.state_dict() and "pose_gain" not in plain.state_dict()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "pose_gain"})
    gain = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25, 1.5], dtype=torch.float64)
    model.pose_gain.copy_(gain)
    pose, audio = inputs(2, 60)
    velocity = velocity_map(torch.zeros(12).numpy(), torch.ones(12).numpy())
    args = {"history": pose[:, :5], "temperature": 0.7, "velocity": velocity}
    ref = sample(plain, audio, generator=torch.Generator().manual_seed(6), **args)
    for fn in (sample, sample_fast, sample_naive):
        got = fn(model, audio, generator=torch.Generator().manual_seed(6), **args)
        torch.testing.assert_close(got[..., :6], ref[..., :6] * gain, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got[..., 6:], ref[..., 6:], rtol=1e-9, atol=1e-9)
    sampler = HeadPoseSampler(model, generator=torch.Generator().manual_seed(6), **args)
    steps = torch.stack([sampler.step(audio[:, t]) for t in range(60)], dim=1)
    torch.testing.assert_close(steps[..., :6], ref[..., :6] * gain, rtol=1e-9, atol=1e-9)
    with pytest.raises(InputError, match="range_calibration must be true or false, got 1"):
        HeadPoseConfig(range_calibration=1)  # type: ignore[arg-type]


def test_two_band_gain_scales_slow_and_fast_parts_the_same_in_every_sampler():
    """With ``range_slow_frames`` the pose half returned is ``g_slow * slow + g_fast *
    (pose - slow)``, ``slow`` a one-pole low-pass of the unscaled poses started at the warm
    start's last pose (computed here independently); the poses fed back stay unscaled. The
    three samplers, the cached one step by step and the fast one in two chunks (the
    stream's way: the low-pass keeps its state across calls) agree."""
    from lsp_models.sampling.draws import slow_band

    tau = 30.0
    model = small_model(velocity_feedback=True, range_calibration=True, range_slow_frames=tau)
    plain = small_model(velocity_feedback=True)
    gains = ("pose_gain", "pose_gain_fast")
    assert all(k in model.state_dict() for k in gains)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in gains})
    g_slow = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25, 1.5], dtype=torch.float64)
    g_fast = torch.tensor([1.5, 0.5, 1.0, 0.3, 2.0, 4.0], dtype=torch.float64)
    model.pose_gain.copy_(g_slow)
    model.pose_gain_fast.copy_(g_fast)
    pose, audio = inputs(2, 60)
    velocity = velocity_map(torch.zeros(12).numpy(), torch.ones(12).numpy())
    args = {"history": pose[:, :5], "temperature": 0.7, "velocity": velocity}
    ref = sample(plain, audio, generator=torch.Generator().manual_seed(6), **args)
    alpha, s = 1 - math.exp(-1 / tau), pose[:, 4, :6].clone()
    expected = ref.clone()
    for t in range(60):
        s = (1 - alpha) * s + alpha * ref[:, t, :6]
        expected[:, t, :6] = g_slow * s + g_fast * (ref[:, t, :6] - s)
    tol = {"rtol": 1e-9, "atol": 1e-9}
    for fn in (sample, sample_fast, sample_naive):
        got = fn(model, audio, generator=torch.Generator().manual_seed(6), **args)
        torch.testing.assert_close(got, expected, **tol)
    sampler = HeadPoseSampler(model, generator=torch.Generator().manual_seed(6), **args)
    steps = torch.stack([sampler.step(audio[:, t]) for t in range(60)], dim=1)
    torch.testing.assert_close(steps, expected, **tol)
    fast = FastHeadPoseSampler(model, generator=torch.Generator().manual_seed(6), **args)
    fast.prime(audio[:, 0])
    cond = model.condition(audio)
    chunks = torch.cat([fast.steps(cond[:, :25]), fast.steps(cond[:, 25:])], dim=1)
    torch.testing.assert_close(chunks, expected, **tol)
    # the low-pass itself: a constant input from a start of 0 approaches it as 1 - (1 - a)^n
    out = slow_band(torch.ones(1, 90, 1), torch.zeros(1, 1), alpha)
    n = torch.arange(1, 91, dtype=torch.float64)
    torch.testing.assert_close(out[0, :, 0].double(), 1 - (1 - alpha) ** n, rtol=1e-5, atol=0)
    assert abs(out[0, int(tau) - 1, 0].item() - (1 - math.exp(-1))) < 1e-5  # tau: 63 %


def test_one_gain_checkpoints_sample_exactly_as_before():
    """A checkpoint written before ``range_slow_frames`` existed (its config without the
    field) loads with one gain per axis, no fast-band buffer, and samples exactly (bit for
    bit) the uncalibrated samples with the pose half times that gain."""
    from lsp_prep.configtree import from_data

    fields = vars(HeadPoseConfig.cpu_small(range_calibration=True, velocity_feedback=True))
    old = {k: v for k, v in fields.items() if k != "range_slow_frames"}
    config = from_data(HeadPoseConfig, old)
    assert config.range_slow_frames == 0
    torch.manual_seed(0)
    model = HeadPoseModel(config).double().eval()
    plain = small_model(velocity_feedback=True)
    state = model.state_dict()
    assert set(state) == {*plain.state_dict(), "pose_gain"} and model.pose_gain_fast is None
    plain.load_state_dict({k: v for k, v in state.items() if k != "pose_gain"})
    gain = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25, 1.5], dtype=torch.float64)
    model.pose_gain.copy_(gain)
    pose, audio = inputs(2, 40)
    velocity = velocity_map(torch.zeros(12).numpy(), torch.ones(12).numpy())
    args = {"history": pose[:, :5], "temperature": 0.7, "velocity": velocity}
    for fn in (sample, sample_fast, sample_naive):
        ref = fn(plain, audio, generator=torch.Generator().manual_seed(6), **args)
        got = fn(model, audio, generator=torch.Generator().manual_seed(6), **args)
        assert torch.equal(got[..., :6], ref[..., :6] * gain)
        assert torch.equal(got[..., 6:], ref[..., 6:])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"range_calibration": True, "range_slow_frames": 0.5}, "must be 0 or >= 1, got 0.5"),
        ({"range_calibration": True, "range_slow_frames": True}, "must be 0 or >= 1, got True"),
        ({"range_slow_frames": 30.0}, "range_slow_frames needs headpose.range_calibration=true"),
    ],
)
def test_bad_band_options_are_refused(overrides, message):
    with pytest.raises(InputError, match=re.escape(message)):
        HeadPoseConfig.cpu_small(**overrides)


def test_band_gains_meet_std_and_speed_on_a_known_signal():
    """Two bands: a slow sine (std 1) plus white noise (std 0.1) in four runs. The gains
    give ``a * slow + b * fast`` 1/std times the runs' std and 1/speed times their speed
    (measured here independently) where that is reachable; both off by the same factor is
    one gain for both (2, 2); out of reach, the gains are clipped."""
    from lsp_models.sampling.calibrate import MAX_GAIN, band_gains

    rng = np.random.default_rng(0)
    t = np.arange(3000)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, (4, 1, 3))
    slow = np.sqrt(2) * np.sin(2 * np.pi * t / 240 + phase)  # (4, 3000, 3), std 1
    fast = 0.1 * rng.standard_normal((4, 3000, 3))
    runs = slow + fast

    def stats(x):
        return x.std(1).mean(0), np.abs(np.diff(x, axis=1)).mean((0, 1))

    std, speed = np.array([0.7, 1.3, 1.0]), np.array([1.25, 0.8, 2.0])
    a, b = band_gains(slow, fast, std=std, speed=speed)
    got_std, got_speed = stats(a * slow + b * fast)
    run_std, run_speed = stats(runs)
    np.testing.assert_allclose(got_std, run_std / std, rtol=1e-9)  # the std exactly
    np.testing.assert_allclose(got_speed, run_speed / speed, rtol=0.01)  # the grid: 0.6 %
    assert a[0] > 1 / 0.7 and b[0] < 1  # wider and slower: the slow band up, the fast down
    assert a[1] < 1 / 1.3 * 1.05 and b[1] > 1  # narrower and faster
    half = np.full(3, 0.5)
    np.testing.assert_allclose(band_gains(slow, fast, std=half, speed=half), 2.0, rtol=1e-9)
    # 10x too narrow and 10x too fast: out of reach; each gain is clipped on its own
    a, b = band_gains(slow, fast, std=np.full(3, 0.1), speed=np.full(3, 10.0))
    np.testing.assert_allclose(a, MAX_GAIN)
    assert (b >= 1 / MAX_GAIN).all() and (b < 1).all()


def test_calibration_gain_is_the_geometric_mean_of_the_std_and_speed_corrections():
    """On the mean path (temperature 0: the calibration's chains are equal) the gain is
    known: recorded poses twice the samples give 2
    everywhere, ten times are clipped to MAX_GAIN, and the same values in another order
    (neighbouring frames swapped: the same std, a higher speed) give the square root of the
    speed correction, computed here independently."""
    from lsp_models.sampling.calibrate import MAX_GAIN, calibrate

    model = small_model(range_calibration=True).float()  # calibrated in float32
    model.pose_gain.fill_(3.0)  # ignored: the calibration measures the model without it
    _, audio = inputs(1, 400)
    audio, history = audio[0].float(), torch.zeros(5, 12)
    path = sample_fast(model, audio[None], history=history[None], temperature=0)[0, :, :6] / 3.0
    path = path.double().numpy()

    def calibration(recorded: np.ndarray):
        poses = torch.zeros(400, 12)
        poses[:, :6] = torch.from_numpy(recorded)
        frames, valid = np.arange(400), np.ones(400, bool)
        args = {"history": history, "valid": valid, "temperature": 0.0, "velocity": None}
        return calibrate(model, audio, poses, frames=frames, **args)

    c = calibration(2 * path)
    np.testing.assert_allclose(c.gain, 2.0, rtol=1e-4)
    np.testing.assert_allclose(c.std, 0.5, rtol=1e-4)
    np.testing.assert_allclose(c.speed, 0.5, rtol=1e-4)
    np.testing.assert_allclose(calibration(10 * path).gain, MAX_GAIN)
    swapped = path[np.arange(400).reshape(200, 2)[:, ::-1].ravel()]  # frames 1 0 3 2 ...
    c = calibration(swapped)
    speed = np.abs(np.diff(path, axis=0)).mean(0) / np.abs(np.diff(swapped, axis=0)).mean(0)
    np.testing.assert_allclose(c.std, 1.0, rtol=1e-4)  # the same values: the same std
    np.testing.assert_allclose(c.speed, speed, rtol=1e-4)
    np.testing.assert_allclose(c.gain, 1 / np.sqrt(speed), rtol=1e-4)
    assert (c.gain > 1.1).all()  # faster: a gain the std alone would not give


def test_fast_sampler_streams_in_chunks_and_keeps_seed_and_mean_path():
    model = small_model()
    pose, audio = inputs(1, 120)
    history = pose[:, :3]
    whole = sample_fast(model, audio, history=history, generator=torch.Generator().manual_seed(2))
    sampler = make_sampler(model, history=history, generator=torch.Generator().manual_seed(2))
    assert isinstance(sampler, FastHeadPoseSampler)
    cond = model.condition(audio).detach()
    sampler.prime(audio[:, 0])
    pieces, t = [], 0
    for n in (1, 7, 2, 50, 60):  # any chunking, single steps included
        pieces.append(
            sampler.steps(cond[:, t : t + n]) if n > 1 else sampler.step_cond(cond[:, t])[:, None]
        )
        t += n
    assert torch.equal(torch.cat(pieces, dim=1), whole)
    again = sample_fast(model, audio, history=history, generator=torch.Generator().manual_seed(2))
    other = sample_fast(model, audio, history=history, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, whole) and (other - whole).abs().max() > 1e-3
    # temperature 0 draws nothing and is the reference's mean path
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    mean_fast = sample_fast(model, audio, history=history, temperature=0, generator=g)
    assert torch.equal(g.get_state(), state)
    mean_ref = sample(model, audio, history=history, temperature=0)
    assert (mean_fast - mean_ref).abs().max() < 1e-10
    # step() primes itself on the first frame, like HeadPoseSampler's
    s = FastHeadPoseSampler(model, history=history, generator=torch.Generator().manual_seed(2))
    steps = torch.stack([s.step(audio[:, i]) for i in range(10)], dim=1)
    assert (steps - whole[:, :10]).abs().max() < 1e-12


def test_fast_sampler_handles_other_kernel_sizes():
    """kernel_size 3: two past taps per layer, queued separately."""
    model = small_model(kernel_size=3, n_layers=3)
    pose, audio = inputs(2, 80)
    args = {"history": pose[:, :5], "temperature": 0.5}
    ref = sample(model, audio, generator=torch.Generator().manual_seed(1), **args)
    fast = sample_fast(model, audio, generator=torch.Generator().manual_seed(1), **args)
    assert (fast - ref).abs().max().item() < 1e-10


def test_fast_sampler_refuses_bad_inputs():
    model = small_model()
    history = torch.zeros(1, SMALL.pose_dim, dtype=torch.float64)
    with pytest.raises(InputError, match="temperature must be a number >= 0"):
        FastHeadPoseSampler(model, history=history, temperature=-0.5)
    with pytest.raises(InputError, match="history must be"):
        FastHeadPoseSampler(model, history=torch.zeros(1, 5, dtype=torch.float64))
    half = small_model().bfloat16()  # numpy has no bfloat16: make_sampler keeps the torch one
    with pytest.raises(InputError, match="needs a float32 or float64 model on the CPU"):
        FastHeadPoseSampler(half, history=history.bfloat16())
    assert type(make_sampler(half, history=history.bfloat16())) is HeadPoseSampler


def test_sampling_ignores_training_mode_dropout():
    model = small_model(dropout=0.3)
    _, audio = inputs(1, 30)
    history = torch.zeros(1, SMALL.pose_dim, dtype=torch.float64)
    model.train()
    a = sample(model, audio, history=history, temperature=0)
    b = sample_naive(model, audio, history=history, temperature=0)
    model.eval()
    c = sample(model, audio, history=history, temperature=0)
    assert torch.allclose(a, c) and torch.allclose(b, c)


def test_temperature_zero_is_the_mean_path_and_spread_grows_with_temperature():
    model = small_model()
    B, T = 64, 40
    _, audio = inputs(1, T)
    audio = audio.expand(B, T, -1)
    history = torch.zeros(B, SMALL.pose_dim, dtype=torch.float64)

    def run(temperature: float, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return sample(model, audio, history=history, temperature=temperature, generator=g)

    mean_a, mean_b = run(0.0, 1), run(0.0, 2)
    assert torch.equal(mean_a, mean_b)  # deterministic, whatever the generator
    assert mean_a.std(dim=0).max() == 0  # every copy follows the same path
    # it is the mean path: each frame is the predicted mean given the previous frames,
    # after the warm start (history and the first frame's audio replicated back)
    warm = SMALL.receptive_field - 1
    pose_prev = torch.cat([history[:, None].expand(B, warm + 1, -1), mean_a[:, :-1]], dim=1)
    audio_in = torch.cat([audio[:, :1].expand(B, warm, -1), audio], dim=1)
    with torch.no_grad():
        mean, _ = model(pose_prev, audio_in)
    assert (mean[:, warm:] - mean_a).abs().max() < 1e-10
    spread = {temp: run(temp, 3).std(dim=0).mean().item() for temp in (0.25, 1.0)}
    assert 0 < spread[0.25] < spread[1.0]


def synthetic_batch(B: int, T: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random walk whose velocity is driven by a smooth audio-like feature;
    features normalised to unit variance, as a trainer would."""
    A = SMALL.audio_dim
    drive = torch.randn(B, T, A, generator=g).cumsum(dim=1)
    drive = drive - drive.mean(dim=1, keepdim=True)
    audio = drive / drive.std(dim=1, keepdim=True)  # (B, T, A), smooth
    mix = torch.randn(A, 6, generator=torch.Generator().manual_seed(0)) / math.sqrt(A)
    velocity = torch.tanh(audio @ mix) + 0.1 * torch.randn(B, T, 6, generator=g)
    pose = 0.1 * velocity.cumsum(dim=1)
    pose = pose - pose.mean(dim=1, keepdim=True)
    feature = torch.cat([pose, velocity], dim=-1)
    return feature / feature.std(dim=(0, 1), keepdim=True), audio  # (B, T, 12), (B, T, A)


@pytest.mark.slow
def test_short_training_run_reduces_nll():
    torch.manual_seed(0)
    model = HeadPoseModel(SMALL)  # pose_dropout 0.5, as in the official training
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    warm = SMALL.receptive_field - 1  # frames of context in front of the frames scored
    val_feature, val_audio = synthetic_batch(8, warm + 64, torch.Generator().manual_seed(99))

    def val_nll() -> float:
        model.eval()
        with torch.no_grad():
            pose_prev = torch.cat([val_feature[:, :1], val_feature[:, :-1]], dim=1)
            mean, nls = model(pose_prev, val_audio)
            nll = model.loss(mean[:, warm:], nls[:, warm:], val_feature[:, warm:])["nll"]
        model.train()
        return nll.item()

    before = val_nll()
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        feature, audio = synthetic_batch(8, warm + 64, g)
        pose_prev = torch.cat([feature[:, :1], feature[:, :-1]], dim=1)  # teacher forcing
        mean, nls = model(pose_prev, audio)
        losses = model.loss(mean[:, warm:], nls[:, warm:], feature[:, warm:])
        opt.zero_grad()
        losses["nll"].backward()
        opt.step()
    after = val_nll()
    assert after < before - 0.3, f"validation nll went from {before:.3f} to {after:.3f}"
    assert set(losses) == {"nll", "mse", "sigma"}
    assert not losses["mse"].requires_grad and not losses["sigma"].requires_grad


def test_loss_is_the_gaussian_nll_with_a_sigma_floor():
    model = small_model()
    g = torch.Generator().manual_seed(0)
    mean, nls, target = (torch.randn(2, 5, 12, generator=g, dtype=torch.float64) for _ in range(3))
    ref = -torch.distributions.Normal(mean, (-nls).exp()).log_prob(target).mean()
    assert torch.allclose(model.loss(mean, nls, target)["nll"], ref)
    huge = torch.full_like(nls, 50.0)  # sigma e^-50: floored at min_sigma
    floored = torch.distributions.Normal(mean, torch.full_like(mean, SMALL.min_sigma))
    ref = -floored.log_prob(target).mean()
    assert torch.allclose(model.loss(mean, huge, target)["nll"], ref)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("residual_channels", 0, "residual_channels must be an integer >= 1, got 0"),
        ("skip_channels", 16.0, "skip_channels must be an integer >= 1, got 16.0"),
        ("pose_dim", True, "pose_dim must be an integer >= 1, got True"),
        ("cond_channels", -1, "cond_channels must be an integer >= 0, got -1"),
        ("kernel_size", 1, "kernel_size must be an integer >= 2, got 1"),
        ("n_layers", 0, "n_layers must be an integer >= 1"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\), got 1.0"),
        ("pose_dropout", -0.1, r"pose_dropout must be in \[0, 1\)"),
        ("min_sigma", 0.0, "min_sigma must be > 0, got 0.0"),
    ],
)
def test_bad_config_values_are_refused(field, value, message):
    with pytest.raises(InputError, match=message):
        HeadPoseConfig.cpu_small(**{field: value})


def test_bad_sampling_inputs_are_refused():
    model = small_model()
    _, audio = inputs(1, 10)
    history = torch.zeros(1, SMALL.pose_dim, dtype=torch.float64)
    with pytest.raises(InputError, match="temperature must be a number >= 0"):
        sample(model, audio, history=history, temperature=-1.0)
    with pytest.raises(InputError, match="history must be"):
        sample(model, audio, history=torch.zeros(1, 6, dtype=torch.float64))
    with pytest.raises(InputError, match="audio must be"):
        sample(model, audio[..., :3], history=history)


def test_benchmark_samplers_returns_two_timings():
    """The two timings are of the two samplers alone: positive, and together no more than
    the wall time of the whole call (which also builds the model and warms both up)."""
    start = time.perf_counter()
    naive_s, cached_s = benchmark_samplers(SMALL, 3)
    wall = time.perf_counter() - start
    assert naive_s > 0 and cached_s > 0
    assert naive_s + cached_s < wall, (naive_s, cached_s, wall)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_samplers_agree_on_cuda():
    model = small_model().cuda()
    pose, audio = inputs(2, 100)
    pose, audio = pose.cuda(), audio.cuda()
    history = pose[:, :3]
    g = [torch.Generator(device="cuda").manual_seed(5) for _ in range(2)]
    fast = sample(model, audio, history=history, generator=g[0])
    slow = sample_naive(model, audio, history=history, generator=g[1])
    assert fast.device.type == "cuda"
    assert (fast - slow).abs().max().item() < 1e-5
