"""Where the raw datasets come from, and the two things the stages ask of them: ``download``
(fetch, verify, lay out) and ``load_raw`` (decode).

Each built-in dataset belongs to a family module that holds its file table (names, sizes,
md5s, what its archives may unpack to), builds it and decodes it: ``cnnlab.data.mnist``
(MNIST and Fashion-MNIST), ``cifar``, ``flowers``, ``digits``; ``FAMILIES`` maps each name
to its family (the ``family`` of its spec). They share ``fetch`` (one file from a URL or a
local mirror, with retries, size caps and deadlines), ``archives`` (md5s, capped gunzip,
safe tar extraction) and ``idx`` (the IDX format).

The published files are trusted only through their checksums: torchvision's tables for the
archives as published, plus (for MNIST and Fashion-MNIST) the md5s of the decompressed files,
because offline mirrors often hold a recompressed copy whose ``.gz`` bytes differ while the
data is identical. Nothing is unpickled (CIFAR batches are pickles) before its md5 matched.
``OVERRIDE_ENV`` can replace those tables, mirrors and limits.

``download`` builds the dataset in a temporary sibling of its destination and renames it into
place only after everything verified, so an interrupted or failed download never leaves a
half-written directory for DVC (or the next stage) to mistake for data. A scratch directory
left by a run that was killed outright (SIGKILL, power loss) is removed by the next download
of that dataset; one that a running download still holds (a lock on it) is left alone.

torchvision costs about two seconds to import, so it is imported inside the functions that
need it; params validation and ``digits`` never pay for it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Protocol

from cnnlab.data import cifar, digits, flowers, mnist
from cnnlab.data.catalog import DATASETS
from cnnlab.data.fetch import RETRY, RetryPolicy, mirror_root
from cnnlab.data.options import ResizedOptions
from cnnlab.data.raw import DataError, RawDataset, Source, TarLimits, redownload_hint
from cnnlab.files import replace_directory, scratch_beside

__all__ = [
    "FAMILIES",
    "OVERRIDE_ENV",
    "DataError",
    "RawDataset",
    "RetryPolicy",
    "Source",
    "TarLimits",
    "download",
    "load_raw",
    "source",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# The datasets' families
# --------------------------------------------------------------------------------------------


class Family(Protocol):
    """What ``download`` and ``load_raw`` ask of a dataset, whatever its family."""

    def build(
        self, name: str, out: Path, mirror: str | os.PathLike[str] | None, retry: RetryPolicy
    ) -> None: ...

    def load(self, name: str, raw_dir: Path, options: ResizedOptions | None) -> RawDataset: ...


@dataclass(frozen=True)
class _Fetched:
    """A family whose files are fetched and checked against :func:`source`; its module has
    ``table``, ``content_names``, ``CONTENTS_REQUIRED``, ``build`` and ``load``."""

    module: ModuleType

    def build(
        self, name: str, out: Path, mirror: str | os.PathLike[str] | None, retry: RetryPolicy
    ) -> None:
        src = source(name)
        root = mirror_root(name, mirror)
        label = None if mirror is None else os.fspath(mirror)
        self.module.build(src, root, label, out, retry)

    def load(self, name: str, raw_dir: Path, options: ResizedOptions | None) -> RawDataset:
        return self.module.load(source(name), raw_dir, options)


@dataclass(frozen=True)
class _Bundled:
    """A dataset a library ships (digits): nothing to fetch, no mirror, no table."""

    module: ModuleType

    def build(
        self, name: str, out: Path, mirror: str | os.PathLike[str] | None, retry: RetryPolicy
    ) -> None:
        self.module.build(out)

    def load(self, name: str, raw_dir: Path, options: ResizedOptions | None) -> RawDataset:
        return self.module.load(raw_dir, options)


_BY_FAMILY: dict[str, Family] = {
    "mnist": _Fetched(mnist),
    "cifar": _Fetched(cifar),
    "flowers": _Fetched(flowers),
    "digits": _Bundled(digits),
}
#: Every built-in dataset and the family module that builds and decodes it (its spec's
#: ``family`` in :mod:`cnnlab.data.catalog`).
FAMILIES: dict[str, Family] = {name: _BY_FAMILY[spec.family] for name, spec in DATASETS.items()}


def _fetched(name: str) -> ModuleType:
    family = FAMILIES.get(name)
    if not isinstance(family, _Fetched):
        raise DataError(f"dataset '{name}' is not downloaded from the network")
    return family.module


# --------------------------------------------------------------------------------------------
# The checksums, and the override
# --------------------------------------------------------------------------------------------

#: Environment variable naming a JSON file that replaces mirrors, checksums and size limits
#: per dataset: ``{"mnist": {"mirrors": [...], "archives": {file: md5}, "contents": {file:
#: md5}, "sizes": {file: bytes}, "unpacked": {archive: {"max_bytes": n, "max_members": n}}}}``.
#: It exists so that tests (including end-to-end runs of the real ``dvc`` CLI, where nothing
#: can be monkeypatched) can serve small files of the real formats, and so that a site with
#: its own repackaged copies can vouch for them (with their sizes, where they are larger than
#: the published ones). File names cannot change, only md5s, sizes and URLs.
OVERRIDE_ENV = "CNNLAB_SOURCES"


def _torchvision_source(name: str) -> Source:
    """The family's table, from torchvision's class attributes read at call time
    (patchable)."""
    return _fetched(name).table(name)


def source(name: str) -> Source:
    """The mirrors and checksums used for ``name``: torchvision's, unless ``OVERRIDE_ENV`` says
    otherwise. Every checksum lookup goes through here, so there is one thing to replace."""
    base = _torchvision_source(name)
    path = os.environ.get(OVERRIDE_ENV)
    if not path:
        return base
    table = _read_override(path)
    entry = table.get(name)
    return base if entry is None else _apply_override(base, entry, path)


def _read_override(path: str) -> dict[str, dict]:
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{OVERRIDE_ENV}={path}: cannot read it as JSON ({exc}). Fix the file or unset "
            f"{OVERRIDE_ENV} to use the published checksums."
        ) from exc
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise DataError(f"{OVERRIDE_ENV}={path}: expected {{dataset: {{...}}}} at the top level")
    return table


def _apply_override(base: Source, entry: dict, path: str) -> Source:
    where = f"{OVERRIDE_ENV}={path}, dataset '{base.name}'"
    keys = ("mirrors", "archives", "contents", "sizes", "unpacked")
    unknown = set(entry) - set(keys)
    if unknown:
        raise DataError(f"{where}: unknown keys {sorted(unknown)}; allowed: {', '.join(keys)}")
    changes: dict = {}
    if "mirrors" in entry:
        mirrors = entry["mirrors"]
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise DataError(f"{where}: 'mirrors' must be a list of base URLs")
        changes["mirrors"] = tuple(m if m.endswith("/") else m + "/" for m in mirrors)
    for key, allowed in (("archives", set(base.archives)), ("contents", _content_names(base))):
        if key not in entry:
            continue
        table = entry[key]
        if not isinstance(table, dict) or not all(
            isinstance(v, str) and len(v) == 32 for v in table.values()
        ):
            raise DataError(f"{where}: '{key}' must map file names to 32-digit md5 strings")
        if not set(table) <= allowed:
            raise DataError(
                f"{where}: '{key}' names {sorted(set(table) - allowed)}; "
                f"the file names are fixed: {sorted(allowed)}"
            )
        changes[key] = dict(table)
    if "sizes" in entry:
        changes["sizes"] = {**base.sizes, **_sizes_override(entry["sizes"], base, where)}
    if "unpacked" in entry:
        changes["unpacked"] = {
            **base.unpacked,
            **_unpacked_override(entry["unpacked"], base, where),
        }
    if set(changes.get("archives", base.archives)) != set(base.archives):
        raise DataError(f"{where}: 'archives' must list every file: {sorted(base.archives)}")
    required = _fetched(base.name).CONTENTS_REQUIRED
    if required and set(changes.get("contents", base.contents)) != set(base.contents):
        # CIFAR-10: every batch is fetched and checked by this table, so a partial one would
        # skip files.
        raise DataError(f"{where}: 'contents' must list every file: {sorted(base.contents)}")
    return replace(base, **changes)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _sizes_override(table: object, base: Source, where: str) -> dict[str, int]:
    allowed = set(base.archives) | _content_names(base)
    if not isinstance(table, dict) or not all(_positive_int(v) for v in table.values()):
        raise DataError(f"{where}: 'sizes' must map file names to sizes in bytes (> 0)")
    if not set(table) <= allowed:
        raise DataError(
            f"{where}: 'sizes' names {sorted(set(table) - allowed)}; "
            f"the file names are fixed: {sorted(allowed)}"
        )
    return dict(table)


def _unpacked_override(table: object, base: Source, where: str) -> dict[str, TarLimits]:
    fields = {"max_bytes", "max_members"}
    if not isinstance(table, dict) or not all(
        isinstance(v, dict) and set(v) == fields and all(map(_positive_int, v.values()))
        for v in table.values()
    ):
        raise DataError(
            f"{where}: 'unpacked' must map archive names to "
            '{"max_bytes": n, "max_members": n} (both > 0)'
        )
    if not set(table) <= set(base.unpacked):
        raise DataError(
            f"{where}: 'unpacked' names {sorted(set(table) - set(base.unpacked))}; "
            f"the tar archives are: {sorted(base.unpacked)}"
        )
    return {name: TarLimits(**limits) for name, limits in table.items()}


def _content_names(src: Source) -> set[str]:
    """The files ``contents`` may name: fixed by the family (see its ``content_names``)."""
    return _fetched(src.name).content_names(src)


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------


def _known(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; known datasets: {', '.join(DATASETS)}")


def download(
    name: str,
    dest: Path,
    mirror: str | os.PathLike[str] | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> None:
    """Fetch dataset ``name`` into directory ``dest``, verified, laid out as torchvision
    leaves it (``dest/MNIST/raw/...``, ``dest/cifar-10-batches-py/...``; ``dest/digits.npz``).

    ``mirror`` (``data.mirror`` in params.yaml) replaces the public mirrors: a local directory
    or an http(s) base URL holding ``<dataset>/`` folders, each with the published files or
    torchvision's layout. ``dest`` is replaced atomically; on failure it is left as it was
    (absent, if it was absent) and no scratch directory remains.
    """
    _known(name)
    dest = Path(dest)
    retry = retry or RETRY
    with scratch_beside(dest, ".partial") as scratch:
        built = scratch / "out"
        built.mkdir()
        FAMILIES[name].build(name, built, mirror, retry)
        replace_directory(built, dest)


# --------------------------------------------------------------------------------------------
# load_raw
# --------------------------------------------------------------------------------------------


def load_raw(name: str, raw_dir: Path, options: ResizedOptions | None = None) -> RawDataset:
    """Decode what ``download`` left in ``raw_dir``.

    Damaged files get a message naming the file instead of torchvision's assertion or
    reshape errors; CIFAR batches are checked against their md5 before they are unpickled.
    ``options`` (``dataset.<name>``) says the size Flowers-102's photos are resized to; the
    other built-in datasets take none.
    """
    _known(name)
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir} does not exist: {redownload_hint(name)}")
    return FAMILIES[name].load(name, raw_dir, options)
