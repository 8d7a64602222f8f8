"""A stage's slice of params.yaml: the keys dvc.yaml lists for it. The validate stage checks
the whole file first; the other stages read their keys here without importing the schema's
registries, so a new model option reruns no download or prepare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnlab.errors import UserError


class ParamsError(UserError, ValueError):
    """params.yaml is unreadable or holds a value the pipeline cannot use."""


#: What a key missing from params.yaml gets (the schema's error and a slice's say the same).
MISSING = (
    "missing: params.yaml holds every key with its default; put it back "
    "(`git show HEAD:params.yaml` has them all)"
)


def read_yaml(text: str) -> Any:
    """YAML as DVC reads params.yaml (ruamel's YAML 1.2: PyYAML would read ``010`` as 8 and
    ``1:30`` as 90, where dvc.lock records 10 and '1:30')."""
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


def read_params(path: str | Path = "params.yaml") -> Any:
    """params.yaml as DVC reads it, unvalidated."""
    from ruamel.yaml import YAMLError

    path = Path(path)
    try:
        return read_yaml(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project's top directory") from None
    except YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None


def load_slice(*keys: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    """``{key: value}`` for dotted keys as dvc.yaml's ``params:`` spell them (``data.mirror``)."""
    raw = read_params(path)
    values = {}
    for key in keys:
        value = raw
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise ParamsError(f"{path}: {key}: {MISSING}")
            value = value[part]
        values[key] = value
    return values
