"""The schemas of ``dataset.<name>`` in params.yaml: the prepare stage of a dataset depends
on its own entry only (every dataset needs one, ``{}`` if nothing to set: DVC refuses a
stage whose declared param is missing). Torch-free: validation reads it at every stage start.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ResizeMode = Literal["center_crop", "letterbox"]


class DatasetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FixedSizeOptions(DatasetOptions):
    """A built-in dataset whose images all have one size already: nothing to choose."""


class ResizedOptions(DatasetOptions):
    """Images of many sizes, resized once in prepare to ``size`` x ``size``: ``center_crop``
    scales the short side and cuts the middle square (loses the edges of elongated images),
    ``letterbox`` scales the long side and pads with black (keeps all, wastes pixels)."""

    size: int = Field(ge=8, le=512)
    resize: ResizeMode


class FolderOptions(ResizedOptions):
    """A folder of the user's own images: the only options with defaults in code, since
    params.yaml cannot list a user's folder in advance (``dataset.my_photos: {}``)."""

    size: int = Field(64, ge=8, le=512)
    resize: ResizeMode = "center_crop"
    #: What to do with a file prepare cannot decode as an image (a corrupt JPEG, a text
    #: file): ``skip`` leaves it out and lists it by name; ``error`` stops the stage.
    on_bad_file: Literal["skip", "error"] = "skip"
    #: Share of each class held out as the test split, drawn by ``seed``, when the folder
    #: has no ``train/`` and ``test/`` sub-folders of its own.
    test_fraction: float = Field(0.2, gt=0, lt=1)
