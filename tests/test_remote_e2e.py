"""A DVC remote round trip: push from one clone, reproduce nothing in fresh clones.

Two kinds of remote, with the commands of docs/beyond-one-machine.md: a local directory,
and S3 as served by moto's server on 127.0.0.1 (the S3 API over HTTP, through DVC's own
dvc-s3 plugin and the `endpointurl` an S3-compatible store such as MinIO needs).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import copy_repository, dvc, run, stages_run

pytestmark = pytest.mark.e2e

OUTPUTS = (
    "models/lenet-digits/best.pt",
    "data/prepared/digits/train_images.npy",
    "plots/eval/lenet-digits/predictions.json",
    "reports/summary.json",
)
BUCKET = "cnnlab-test"
#: moto accepts any credentials; they go where the README puts real ones (.dvc/config.local).
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


def _commit(path: Path, message: str) -> None:
    run(["git", "add", "-A"], path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], path)


def _metrics(path: Path) -> dict:
    shown = json.loads(dvc("metrics", "show", "--json", cwd=path).stdout)
    return next(iter(shown.values()))["data"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _s3(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["access_key_id"],
        aws_secret_access_key=CREDENTIALS["secret_access_key"],
    )


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, holding one empty bucket."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    _s3(endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def _credentials(repo: Path) -> None:
    """What each clone's user does once: the secrets stay out of git (--local)."""
    for key, value in CREDENTIALS.items():
        dvc("remote", "modify", "--local", "store", key, value, cwd=repo)


@pytest.fixture(scope="module", params=["local", "s3"])
def pushed(request, reproduced_digits, tmp_path_factory: pytest.TempPathFactory):
    """A reproduced project (a copy of the session's, see conftest) given a remote,
    committed and pushed. Returns (origin, remote kind, where the remote keeps its files)."""
    kind = request.param
    base = tmp_path_factory.mktemp(f"remote-{kind}")
    origin = copy_repository(reproduced_digits[0], base / "origin")
    if kind == "local":
        store = str(base / "store")
        dvc("remote", "add", "-d", "store", store, cwd=origin)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        store = f"s3://{BUCKET}/cnnlab"
        dvc("remote", "add", "-d", "store", store, cwd=origin)
        dvc("remote", "modify", "store", "endpointurl", endpoint, cwd=origin)
        _credentials(origin)
    _commit(origin, "the remote")  # the remote's config travels with git, as dvc.lock does
    result = dvc("push", cwd=origin)
    assert "pushed" in result.stdout, result.stdout
    return origin, kind, store


def _clone(pushed, tmp_path: Path) -> Path:
    origin, kind, _store = pushed
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "models").exists()
    assert not (clone / ".dvc" / "config.local").exists()  # no secrets in git
    if kind == "s3":
        _credentials(clone)
    return clone


def test_push_fills_the_remote(pushed, request) -> None:
    _origin, kind, store = pushed
    if kind == "local":
        stored = [p for p in (Path(store) / "files" / "md5").rglob("*") if p.is_file()]
    else:
        s3 = _s3(request.getfixturevalue("s3_endpoint"))
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="cnnlab/files/md5/")
        stored = listed.get("Contents", [])
    assert len(stored) >= len(OUTPUTS)


def test_repro_pull_in_a_fresh_clone_reruns_nothing(pushed, tmp_path: Path) -> None:
    origin = pushed[0]
    clone = _clone(pushed, tmp_path)
    result = dvc("repro", "--pull", cwd=clone)
    assert stages_run(result.stdout) == []
    for name in OUTPUTS:
        assert (clone / name).read_bytes() == (origin / name).read_bytes(), name
    assert _metrics(clone) == _metrics(origin)


def test_pull_then_repro_reruns_nothing(pushed, tmp_path: Path) -> None:
    origin = pushed[0]
    clone = _clone(pushed, tmp_path)
    dvc("pull", cwd=clone)
    assert json.loads(dvc("status", "--json", cwd=clone).stdout or "{}") == {}
    again = dvc("repro", cwd=clone)
    assert stages_run(again.stdout) == []
    assert _metrics(clone) == _metrics(origin)
