"""The model families the generator runs, one module each, and how a model finds its family.

A model's family comes from its folder's ``model_index.json`` (the ``_class_name`` and what tells variants of a
class apart), checked against its components' configs before anything is loaded; before a download, from the
hub ids each family knows (so a request is brought to the right shape rules from the start).
"""

from __future__ import annotations

from components.generation.families.base import Family, ModelFolder, ShapeRules, Task
from components.generation.families.registry import (
    DEFAULT_RULES,
    FAMILIES,
    family_by_name,
    family_for_model_id,
    family_of_folder,
    rules_for_model,
    tiny_model_ids,
)

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
