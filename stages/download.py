"""download@<dataset>: fetch the published files (or a local mirror's copy), checksums verified.

For a folder of the user's own images (datasets/<name>/), list its files and their md5s
instead: DVC tracks the folder as this stage's dependency, the list pins what prepare reads.
"""

from __future__ import annotations

import sys

from common import RAW, SOURCES, interactive, run_stage

from cnnlab.files import shortened
from cnnlab.slices import load_slice


def main(dataset: str) -> None:
    from cnnlab.data.catalog import is_folder

    if is_folder(dataset):
        from cnnlab.data.folders import scan

        progress = "bar" if interactive() else "line"
        manifest = scan(dataset, SOURCES / dataset, RAW / dataset, progress=progress)
        ignored, skipped = manifest["ignored"], manifest["skipped"]
        for entry in skipped:  # links and special files: never followed nor read
            print(
                f"{dataset}: skipped {SOURCES / dataset / entry['path']}: {entry['reason']}",
                file=sys.stderr,
            )
        print(
            f"{dataset}: {len(manifest['files'])} files in {len(manifest['classes'])} classes "
            f"({shortened(manifest['classes'])}) listed from {SOURCES / dataset}/"
            + (f"; ignored (not in a class folder): {shortened(ignored)}" if ignored else "")
            + (f"; {len(skipped)} link(s) or special file(s) skipped" if skipped else "")
        )
        return
    from cnnlab.data.sources import download

    download(dataset, RAW / dataset, mirror=load_slice("data.mirror")["data.mirror"])
    print(f"{dataset}: downloaded and verified into {RAW / dataset}")


if __name__ == "__main__":
    run_stage(main, 1, "python stages/download.py <dataset>")
