"""Where the built-in datasets come from, and the two things the stages ask of them:
``download`` (fetch, verify, lay out) and ``load_raw`` (decode).

Each dataset's family module (``mnist``, ``cifar``, ``flowers``; ``digits`` has nothing to
fetch) holds its file table, builds and decodes it. Files are trusted only through their
md5s: torchvision's tables, which ``OVERRIDE_ENV`` can replace. torchvision costs about two
seconds to import, so only the functions that need it import it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from cnnlab.data import cifar, digits, flowers, mnist
from cnnlab.data.catalog import DATASETS, ResizedOptions
from cnnlab.data.fetch import RETRY, RetryPolicy, mirror_root
from cnnlab.data.raw import DataError, RawDataset, Source, TarLimits, redownload_hint
from cnnlab.files import atomic_directory

#: The family module that fetches and decodes each downloaded dataset.
FAMILIES: dict[str, ModuleType] = {
    "mnist": mnist,
    "fashion_mnist": mnist,
    "cifar10": cifar,
    "flowers102": flowers,
}

#: Environment variable naming a JSON file that replaces mirrors, checksums and size limits
#: per dataset: ``{"mnist": {"mirrors": [...], "archives": {file: md5}, "contents": {file:
#: md5}, "sizes": {file: bytes}, "unpacked": {archive: {"max_bytes": n, "max_members": n}}}}``.
#: For tests (end-to-end runs of the real ``dvc`` CLI cannot be monkeypatched) and for sites
#: that vouch for their own repackaged copies. File names cannot change.
OVERRIDE_ENV = "CNNLAB_SOURCES"


def _torchvision_source(name: str) -> Source:
    """The family's table, from torchvision's class attributes read at call time."""
    return FAMILIES[name].table(name)


def source(name: str) -> Source:
    """The mirrors and checksums used for ``name``: torchvision's, unless ``OVERRIDE_ENV`` says
    otherwise. Every checksum lookup goes through here, so there is one thing to replace."""
    base = _torchvision_source(name)
    path = os.environ.get(OVERRIDE_ENV)
    if not path:
        return base
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{OVERRIDE_ENV}={path}: cannot read it as JSON ({exc}). Fix the file or unset "
            f"{OVERRIDE_ENV} to use the published checksums."
        ) from exc
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise DataError(f"{OVERRIDE_ENV}={path}: expected {{dataset: {{...}}}} at the top level")
    entry = table.get(name)
    return base if entry is None else _apply_override(base, entry, path)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_md5(value: object) -> bool:
    return isinstance(value, str) and len(value) == 32


def _is_limits(value: object) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"max_bytes", "max_members"}
        and all(map(_positive_int, value.values()))
    )


def _apply_override(base: Source, entry: dict, path: str) -> Source:
    where = f"{OVERRIDE_ENV}={path}, dataset '{base.name}'"
    keys = ("mirrors", "archives", "contents", "sizes", "unpacked")
    unknown = set(entry) - set(keys)
    if unknown:
        raise DataError(f"{where}: unknown keys {sorted(unknown)}; allowed: {', '.join(keys)}")

    def checked(
        key: str, valid: Callable[[object], bool], what: str, allowed: set[str], names: str
    ) -> dict:
        table = entry[key]
        if not isinstance(table, dict) or not all(map(valid, table.values())):
            raise DataError(f"{where}: '{key}' must map {what}")
        if not set(table) <= allowed:
            raise DataError(
                f"{where}: '{key}' names {sorted(set(table) - allowed)}; {names}: {sorted(allowed)}"
            )
        return dict(table)

    fixed = "the file names are fixed"
    files = {"archives": set(base.archives), "contents": _content_names(base)}
    changes: dict = {}
    if "mirrors" in entry:
        mirrors = entry["mirrors"]
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise DataError(f"{where}: 'mirrors' must be a list of base URLs")
        changes["mirrors"] = tuple(m if m.endswith("/") else m + "/" for m in mirrors)
    for key, allowed in files.items():
        if key in entry:
            changes[key] = checked(
                key, _is_md5, "file names to 32-digit md5 strings", allowed, fixed
            )
    if "sizes" in entry:
        what = "file names to sizes in bytes (> 0)"
        sizes = checked("sizes", _positive_int, what, files["archives"] | files["contents"], fixed)
        changes["sizes"] = {**base.sizes, **sizes}
    if "unpacked" in entry:
        what = 'archive names to {"max_bytes": n, "max_members": n} (both > 0)'
        limits = checked("unpacked", _is_limits, what, set(base.unpacked), "the tar archives are")
        changes["unpacked"] = {**base.unpacked, **{k: TarLimits(**v) for k, v in limits.items()}}
    if set(changes.get("archives", base.archives)) != set(base.archives):
        raise DataError(f"{where}: 'archives' must list every file: {sorted(base.archives)}")
    # CIFAR-10's batches are each fetched and checked by this table: none may be left out.
    # MNIST's decompressed md5s are a second way to verify a file, not the only one.
    required = FAMILIES[base.name] is cifar
    if required and set(changes.get("contents", base.contents)) != set(base.contents):
        raise DataError(f"{where}: 'contents' must list every file: {sorted(base.contents)}")
    return replace(base, **changes)


def _content_names(src: Source) -> set[str]:
    """The files ``contents`` may name: what MNIST's .gz files decompress to (md5s known or
    not), the files with md5s in the table for the others (none for Flowers-102's JPEGs)."""
    return mnist.content_names(src) if FAMILIES[src.name] is mnist else set(src.contents)


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

    ``mirror`` (``data.mirror``) replaces the public mirrors: a local directory or an http(s)
    base URL holding ``<dataset>/`` folders, with the published files or torchvision's layout.
    Built in a scratch sibling and renamed into place once verified, so a failed or killed
    download never leaves a half-written ``dest`` (the next download removes the scratch).
    """
    _known(name)
    dest = Path(dest)
    with atomic_directory(dest) as built:
        if name == "digits":
            digits.build(built)
        else:
            src = source(name)
            label = None if mirror is None else os.fspath(mirror)
            FAMILIES[name].build(src, mirror_root(name, mirror), label, built, retry or RETRY)


def load_raw(name: str, raw_dir: Path, options: ResizedOptions | None = None) -> RawDataset:
    """Decode what ``download`` left in ``raw_dir``; damaged files get a message naming the
    file. ``options`` (``dataset.<name>``): the size Flowers-102's photos are resized to."""
    _known(name)
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir} does not exist: {redownload_hint(name)}")
    if name == "digits":
        return digits.load(raw_dir, options)
    return FAMILIES[name].load(source(name), raw_dir, options)
