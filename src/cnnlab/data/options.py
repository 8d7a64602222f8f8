"""Per-dataset options (``dataset.<name>`` in params.yaml), one entry per dataset.

Like ``model.<name>`` for models: the prepare stage of a dataset depends on its own entry
only, so a change re-prepares that dataset and nothing else. Every name in ``datasets:``
needs an entry, because DVC refuses to run a stage whose declared param is missing; the
built-in datasets with nothing to set have ``{}``.

Any name that is not a built-in dataset is a folder of the user's own images at
``datasets/<name>/`` (:mod:`cnnlab.data.folders`), with :class:`FolderOptions`; which class
a name takes is :func:`cnnlab.data.catalog.options_class`. Torch-free: params validation
reads it at every stage start.
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
    """Images of many sizes, resized once in prepare to ``size`` x ``size``.

    ``center_crop`` scales the short side to ``size`` and cuts the middle square (the usual
    ImageNet-style preprocessing; loses the edges of elongated images); ``letterbox``
    scales the long side to ``size`` and pads the rest with black (keeps all of the image,
    wastes some pixels). A built-in dataset's values are in params.yaml.
    """

    size: int = Field(ge=8, le=512)
    resize: ResizeMode


class FolderOptions(ResizedOptions):
    """A folder of the user's own images, ``datasets/<name>/<class>/<image>``.

    The only options with defaults in code: params.yaml cannot list a user's folder in
    advance, so ``dataset.my_photos: {}`` takes these.
    """

    size: int = Field(64, ge=8, le=512)
    resize: ResizeMode = "center_crop"
    #: What to do with a file prepare cannot decode as an image (a corrupt JPEG, a text
    #: file): ``skip`` leaves it out and lists it by name; ``error`` stops the stage.
    on_bad_file: Literal["skip", "error"] = "skip"
    #: Share of each class held out as the test split, drawn by ``seed``, when the folder
    #: has no ``train/`` and ``test/`` sub-folders of its own.
    test_fraction: float = Field(0.2, gt=0, lt=1)
