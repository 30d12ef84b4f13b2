"""Model presets: plain data in manifests/presets/, loaded into the config dataclasses."""

from __future__ import annotations

import dataclasses
import json
import typing
from importlib import resources
from typing import Any

import tomllib

from lsp_models.nets.apc import APCConfig
from lsp_models.nets.headpose import HeadPoseConfig
from lsp_models.nets.mouth import MouthConfig
from lsp_models.nets.renderer import (
    DiscriminatorConfig,
    GeneratorConfig,
    LossConfig,
    RendererConfig,
)
from lsp_models.nets.vgg import VGGLossConfig
from lsp_models.train.loop import TrainConfig
from lsp_models.train.render_data import RenderDataConfig
from lsp_prep.errors import InputError

T = typing.TypeVar("T")

SECTIONS: dict[str, type] = {
    "apc": APCConfig,
    "apc_train": TrainConfig,
    "mouth": MouthConfig,
    "mouth_train": TrainConfig,
    "headpose": HeadPoseConfig,
    "headpose_train": TrainConfig,
    "generator": GeneratorConfig,
    "discriminator": DiscriminatorConfig,
    "renderer_loss": LossConfig,
    "renderer_vgg": VGGLossConfig,
    "renderer_train": TrainConfig,
    "renderer_data": RenderDataConfig,
}


def preset_names() -> list[str]:
    folder = resources.files("manifests").joinpath("presets")
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_preset(name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Configs of every section of preset ``name`` with ``section.key=value`` overrides."""
    path = resources.files("manifests").joinpath("presets", f"{name}.toml")
    if not path.is_file():
        raise InputError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}")
    data = tomllib.loads(path.read_text())
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        section, _, field = key.strip().partition(".")
        if not sep or section not in SECTIONS:
            raise InputError(
                f"bad override {item!r}: use section.key=value, sections {sorted(SECTIONS)}"
            )
        names = {f.name for f in dataclasses.fields(SECTIONS[section])}
        if field not in names:
            raise InputError(f"bad override {item!r}: {section} has no field {field!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        data.setdefault(section, {})[field] = value
    out: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        try:
            out[section] = build_config(cls, data.get(section, {}))
        except TypeError as exc:
            raise InputError(f"preset {name!r} section [{section}]: {exc}") from None
    return out


def build_config(cls: type[T], values: dict[str, Any]) -> T:
    """A config dataclass from plain data (TOML, JSON or ``dataclasses.asdict``): lists
    become tuples where the field is a tuple, dicts become nested config dataclasses."""
    hints = typing.get_type_hints(cls)
    values = dict(values)
    for k, v in values.items():
        hint = hints.get(k)
        if isinstance(v, dict) and dataclasses.is_dataclass(hint):
            values[k] = build_config(hint, v)  # type: ignore[arg-type]
        elif isinstance(v, list) and "tuple" in str(hint):
            values[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    return cls(**values)


def renderer_config(cfg: dict[str, Any]) -> RendererConfig:
    """The renderer's nested config from a loaded preset's renderer sections."""
    return RendererConfig(
        generator=cfg["generator"],
        discriminator=cfg["discriminator"],
        loss=cfg["renderer_loss"],
        vgg=cfg["renderer_vgg"],
    )
