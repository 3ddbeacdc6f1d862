"""The registry of families: which families the generator runs (most specific first) and how a model finds its
family — from its folder's ``model_index.json``, or before a download from the hub ids each family knows."""

from __future__ import annotations

import os

from components.generation.families.base import Family, ModelFolder, ShapeRules, Task
from components.generation.families.hunyuan import HunyuanVideoTextToVideo
from components.generation.families.wan import Wan21ImageToVideo, Wan21TextToVideo, Wan22A14B, Wan22TextImageToVideo
from recovery.errors import ModelCompatibilityError

__all__ = [
    "DEFAULT_RULES",
    "FAMILIES",
    "Family",
    "ModelFolder",
    "ShapeRules",
    "Task",
    "family_by_name",
    "family_for_model_id",
    "family_of_folder",
    "rules_for_model",
    "tiny_model_ids",
]

#: Most specific first: the first family whose ``matches`` holds is the folder's.
FAMILIES: tuple[Family, ...] = (
    Wan22A14B(),
    Wan22TextImageToVideo(),
    Wan21ImageToVideo(),
    Wan21TextToVideo(),
    HunyuanVideoTextToVideo(),
)
#: Rules for a model of unknown family until its folder is read (Wan's, the strictest common ones).
DEFAULT_RULES = Wan21TextToVideo.rules


def family_by_name(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)


def family_for_model_id(model_id: str) -> Family | None:
    """The family of a built-in tiny model or a catalogued hub model; None for a model not known by id."""
    for family in FAMILIES:
        if model_id == family.tiny_model_id or model_id in family.known_models:
            return family
    return None


def rules_for_model(model_id: str) -> ShapeRules:
    family = family_for_model_id(model_id)
    return family.rules if family is not None else DEFAULT_RULES


def tiny_model_ids() -> tuple[str, ...]:
    return tuple(family.tiny_model_id for family in FAMILIES)


def family_of_folder(path: str | os.PathLike[str], model_id: str = "") -> Family:
    """The family of a model folder, its folder checked (a class that does not fit its components is refused
    here, before the first step)."""
    try:
        folder = ModelFolder.open(path)
    except (OSError, ValueError) as exc:
        raise ModelCompatibilityError(
            f"{model_id or path}: model_index.json is missing or unreadable", model_id=model_id, reason="no index"
        ) from exc
    for family in FAMILIES:
        if family.matches(folder):
            try:
                family.check_folder(folder)
            except ModelCompatibilityError as exc:
                exc.model_id = model_id or exc.model_id
                raise
            return family
    supported = ", ".join(sorted({family.pipeline_class for family in FAMILIES}))
    if folder.class_name in supported.split(", "):
        variants = ", ".join(f.label for f in FAMILIES if f.pipeline_class == folder.class_name)
        raise ModelCompatibilityError(
            f"{model_id or folder.path.name} is a {folder.class_name} of a variant the studio does not run "
            f"(it runs {variants})",
            model_id=model_id or None,
            reason=f"unsupported variant of {folder.class_name}",
        )
    raise ModelCompatibilityError(
        f"{model_id or folder.path.name} is a {folder.class_name or 'pipeline of unknown class'}; "
        f"the studio runs {supported}",
        model_id=model_id or None,
        reason=f"pipeline class {folder.class_name}",
    )
