"""Data-parallel training: 2 gloo processes on the CPU against one process, same global batch.

The DDP run goes through the train stage itself (which starts torchrun), on the digits; the
assertions are what a user sees: it trains to the single process's accuracy, and rank 0 alone
writes (the same files as one process, one row per epoch, one log line per epoch).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, clean_params_text, digits_prepared, make_params
from e2e import finish, wait_for

from cnnlab import distributed
from cnnlab.data.prepare import save_prepared
from cnnlab.distributed import World, global_batches, rank_slice
from cnnlab.params import ParamsError

RUN = "lenet-digits"


# --------------------------------------------------------------------------- the shards


@pytest.mark.parametrize(("n", "batch", "world"), [(1000, 32, 2), (803, 64, 4), (10, 32, 3)])
def test_rank_shards_are_disjoint_and_form_the_global_batches(n, batch, world) -> None:
    if batch % world:
        batch = batch // world * world
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    seen = []
    for start, length in global_batches(n, batch, world):
        shards = [rank_slice(order, start, length, World(r, world)) for r in range(world)]
        assert len({len(s) for s in shards}) == 1  # equal steps on every rank
        together = torch.cat(shards)
        assert torch.equal(together, order[start : start + length])  # one process's batch
        seen.append(together)
    used = torch.cat(seen) if seen else torch.empty(0, dtype=torch.long)
    assert len(set(used.tolist())) == len(used)  # disjoint
    assert n - world < len(used) <= n  # fewer than `world` images left out per epoch


def test_one_process_keeps_every_image_and_batch() -> None:
    assert global_batches(1000, 32, 1)[-1] == (992, 8)
    assert len(global_batches(1000, 32, 1)) == 32  # ceil(1000 / 32) steps


def test_global_batch_must_split_evenly() -> None:
    with pytest.raises(ParamsError, match=r"batch_size: got 100: .* distributed.nproc=3"):
        make_params(batch_size=100, distributed={"nproc": 3})
    with pytest.raises(ParamsError, match="split evenly over 3 processes"):
        make_params(batch_size=100).global_batch_size(3)
    per_rank = make_params(batch_size=100, distributed={"nproc": 3, "batch_size_per": "rank"})
    assert per_rank.global_batch_size(3) == 300


def test_unknown_distributed_key_is_named() -> None:
    with pytest.raises(ParamsError, match=r"distributed.procs: unknown key .* nproc"):
        make_params(distributed={"procs": 2})


def test_torchrun_launch_is_standalone_unless_a_multi_node_rendezvous_is_set(monkeypatch) -> None:
    for key in distributed.MULTI_NODE_ENV:
        monkeypatch.delenv(key, raising=False)
    command = distributed.torchrun_command(2, "stages/train.py", ["lenet", "digits"])
    assert command[1:] == [
        "-m",
        distributed.LAUNCHER,  # torchrun, its failures a user can fix in one line
        "--nproc-per-node=2",
        "--standalone",
        "stages/train.py",
        "lenet",
        "digits",
    ]
    for key in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    assert distributed.should_launch(2) and not distributed.should_launch(1)
    monkeypatch.setenv("PET_RDZV_ENDPOINT", "node0:29400")
    command = distributed.torchrun_command(2, "stages/train.py", [])
    assert "--standalone" not in command
    assert command[1:3] == ["-m", distributed.LAUNCHER]  # torchrun, its rendezvous errors short
    assert distributed.should_launch(1)  # one process here, but part of a multi-node job
    for key in distributed.TORCHRUN_ENV:
        monkeypatch.setenv(key, "0")
    assert not distributed.should_launch(2)  # already a torchrun worker: join, never nest


# --------------------------------------------------------------------------- real DDP


def _workdir(path: Path, nproc: int) -> Path:
    path.mkdir(parents=True)
    params = yaml.safe_load(clean_params_text())
    params.update(datasets=["digits"], models=["lenet"], epochs=2, batch_size=32, threads=1)
    params["distributed"]["nproc"] = nproc
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    save_prepared(digits_prepared(max_train=1000), path / "data/prepared/digits")
    return path


def _run_train(cwd: Path, *launcher: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The train stage for lenet on digits in ``cwd`` (under ``launcher``: a torchrun)."""
    return subprocess.run(
        [*(launcher or [sys.executable]), str(ROOT / "stages" / "train.py"), "lenet", "digits"],
        cwd=cwd,
        env={**os.environ, "CI": "true"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _train(cwd: Path) -> str:
    result = _run_train(cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _files(cwd: Path) -> set[str]:
    return {p.relative_to(cwd).as_posix() for p in cwd.rglob("*") if p.is_file()}


def _summary(cwd: Path) -> dict:
    return json.loads((cwd / "plots/train" / RUN / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    base = tmp_path_factory.mktemp("ddp")
    single, ddp = _workdir(base / "single", 1), _workdir(base / "ddp", 2)
    return {"single": (single, _train(single)), "ddp": (ddp, _train(ddp))}


@pytest.mark.e2e
def test_two_gloo_processes_train_like_one(runs) -> None:
    single, ddp = _summary(runs["single"][0]), _summary(runs["ddp"][0])
    timings = {k: json.loads((cwd / "timings.json").read_text()) for k, (cwd, _) in runs.items()}
    assert timings["ddp"][RUN]["processes"] == 2 and timings["single"][RUN]["processes"] == 1
    assert ddp["epochs_completed"] == 2 and not ddp["diverged"]
    # The same global batches and the same step, up to float summation order.
    assert ddp["train"]["loss"] == pytest.approx(single["train"]["loss"], abs=0.02)
    assert ddp["val"]["acc"] == pytest.approx(single["val"]["acc"], abs=0.03)
    assert ddp["best_val_acc"] > 0.6  # chance is 0.1


@pytest.mark.e2e
def test_rank_zero_alone_writes(runs) -> None:
    (single, _), (ddp, output) = runs["single"], runs["ddp"]
    assert _files(ddp) == _files(single)  # no extra files from rank 1, no resume state left
    for tsv in ("val/acc.tsv", "train/loss.tsv"):
        rows = (ddp / "plots/train" / RUN / "plots/metrics" / tsv).read_text().splitlines()
        assert [row.split("\t")[0] for row in rows[1:]] == ["1", "2"]  # one row per epoch
    assert output.count(f"{RUN} epoch 1/2:") == 1  # printed by rank 0 only
    best = torch.load(ddp / "models" / RUN / "best.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in best["state_dict"])  # not DDP's names


@pytest.mark.e2e
def test_a_killed_ddp_run_resumes_to_the_same_bytes(runs, tmp_path: Path) -> None:
    """A preempted job: torchrun and both ranks killed with SIGKILL inside epoch 2 (torchrun
    starts each rank in its own session, so the whole process tree is killed, as a node
    loss would). The rerun resumes from rank 0's state, which it broadcasts to rank 1."""
    import psutil

    reference, _ = runs["ddp"]
    cwd = _workdir(tmp_path / "killed", 2)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py"), "lenet", "digits"],
        cwd=cwd,
        env={**os.environ, "CI": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    checkpoint = cwd / "checkpoints" / f"{RUN}.pt"
    wait_for(checkpoint.exists, "rank 0's first resume state", 120, process=process)
    tree = psutil.Process(process.pid)
    for proc in [*tree.children(recursive=True), tree]:
        proc.kill()
    output, _ = finish(process, 60, "train.py under torchrun, killed")
    assert process.returncode != 0, f"finished before the kill; output:\n{output}"
    assert not (cwd / "models" / RUN / "best.pt").exists()
    assert "resuming after epoch 1" in _train(cwd)
    for name in (
        f"models/{RUN}/best.pt",
        f"models/{RUN}/last.pt",
        f"plots/train/{RUN}/plots/metrics/val/acc.tsv",
        f"plots/train/{RUN}/plots/metrics/train/loss.tsv",
    ):
        assert (cwd / name).read_bytes() == (reference / name).read_bytes(), name
    assert checkpoint.exists()  # complete, kept until evaluate@<run> starts


def test_the_resume_state_belongs_to_one_process_count_and_device_type(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "stages"))
    from train import run_fingerprint

    monkeypatch.chdir(tmp_path)
    save_prepared(digits_prepared(max_train=50), tmp_path / "data/prepared/digits")
    params = make_params()
    cpu = torch.device("cpu")

    def key(world: World | None = None, device: torch.device = cpu) -> str:
        return run_fingerprint(params, "lenet", "digits", world or World(0, 1), device)

    assert key() == key()
    assert key(World(0, 2)) != key()  # a torchrun of the user's, or PET_NNODES nodes
    assert key(device=torch.device("cuda")) != key()  # `device: auto` on another machine


#: The user's own torchrun (the stage then takes its world size, whatever `nproc` says).
TORCHRUN_2 = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2")


@pytest.mark.e2e
def test_a_resume_state_of_one_process_is_not_resumed_by_two(runs, tmp_path: Path) -> None:
    """The single run's complete state, met by the user's own torchrun of 2 processes (its
    params unchanged): the state is discarded and the run trains as 2 processes."""
    cwd = tmp_path / "moved"
    shutil.copytree(runs["single"][0], cwd)
    assert (cwd / "checkpoints" / f"{RUN}.pt").exists()
    result = _run_train(cwd, *TORCHRUN_2)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "discarded a resume state from different params" in result.stdout
    assert f"{RUN} epoch 2/2" in result.stdout
    assert json.loads((cwd / "timings.json").read_text())[RUN]["processes"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_is_one_line_before_torchrun_starts(tmp_path: Path) -> None:
    cwd = _workdir(tmp_path / "nocuda", 2)
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    (cwd / "params.yaml").write_text(yaml.safe_dump({**params, "device": "cuda"}))
    result = _run_train(cwd, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("error: device: cuda was requested") == 1, result.stderr
    assert "Traceback" not in result.stderr and "launching torchrun" not in result.stderr


@pytest.mark.e2e
def test_workers_that_each_stop_with_one_line_end_the_launch_in_exit_2(tmp_path: Path) -> None:
    """A bad input found only once the workers run (here a training split of one image for
    two processes): each says why in one line, and the launch exits 2 as a single process
    would, without torchrun's traceback of the failed workers."""
    cwd = _workdir(tmp_path / "one-image", 2)
    shutil.rmtree(cwd / "data/prepared/digits")
    save_prepared(digits_prepared(max_train=2), cwd / "data/prepared/digits")
    result = _run_train(cwd, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "error: lenet-digits: the training split holds 1 image(s)" in result.stderr
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
    assert not (cwd / "models").exists()


@pytest.mark.parametrize(
    ("exits", "code"),
    [((2, -signal.SIGTERM), 2), ((2, 2), 2), ((1, -signal.SIGTERM), None), ((2, 1), None)],
)
def test_a_launch_ends_in_exit_2_only_when_the_first_failed_worker_said_why(
    monkeypatch, exits: tuple[int, int], code: int | None
) -> None:
    """Rank 0 stopped with a one-line error (exit 2) and torchrun then stopped rank 1
    (SIGTERM), or both said why: exit 2. Anything else keeps torchrun's report."""
    import torch.distributed.run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    failures = {
        rank: ProcessFailure(rank, 100 + rank, exit, "<N/A>") for rank, exit in enumerate(exits)
    }
    failures[1].timestamp = failures[0].timestamp + 1  # rank 0 failed first

    def main(argv: list[str]) -> None:
        raise ChildFailedError("stages/train.py", failures)

    monkeypatch.setattr(torch.distributed.run, "main", main)
    monkeypatch.setattr(distributed, "wait_for_node_0", lambda: None)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's Ctrl-C handler
    if code is None:
        with pytest.raises(ChildFailedError):
            distributed.launch([])
    else:
        with pytest.raises(SystemExit) as exited:
            distributed.launch([])
        assert exited.value.code == code


# --------------------------------------------------------------------------- multi-node faults


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _multi_node_train(cwd: Path, port: int, **env: str) -> subprocess.Popen:
    """Node 0 of a two-node job whose other node never comes (``env`` may make it another)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py"), "lenet", "digits"],
        cwd=cwd,
        env={**os.environ, "CI": "true", "PET_NNODES": "2", "PET_MASTER_PORT": str(port), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_master_port_in_use_is_one_line_before_torchrun_starts(tmp_path: Path) -> None:
    cwd = _workdir(tmp_path / "busy", 1)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        _, stderr = finish(_multi_node_train(cwd, port), 120, "node 0 of two, its port busy")
    assert stderr == (
        f"error: distributed: port {port} on 127.0.0.1 is in use (another torchrun, or another "
        "program), and node 0 must listen on it: set PET_MASTER_PORT to a free port on every "
        "node, or stop what holds it\n"
    )


def test_a_node_that_never_comes_is_waited_for_a_stated_time(tmp_path: Path) -> None:
    cwd = _workdir(tmp_path / "alone", 1)
    port = _free_port()
    waiting = _multi_node_train(cwd, port)
    try:
        assert waiting.stderr is not None
        ready, _, _ = select.select([waiting.stderr], [], [], 120)
        assert ready, "no line within 120 s"
        first = waiting.stderr.readline()
        assert first == (
            "waiting up to 300 s (PET_RDZV_CONF=timeout=N,join_timeout=N changes it) for 2 "
            f"nodes to join at 127.0.0.1:{port}: start the same command on every node\n"
        )
    finally:
        waiting.kill()
        waiting.communicate(timeout=60)


#: How far past its wait a launch may end: two Pythons importing torch on a busy machine, and
#: torch's back-off between a node's tries to reach node 0.
MARGIN_S = 60
WAIT = "PET_RDZV_CONF=timeout=5,join_timeout=5"
ADVICE = "or wait longer with PET_RDZV_CONF=timeout=N,join_timeout=N"


@pytest.mark.parametrize(
    ("env", "error"),
    [
        pytest.param(
            {},
            "only 1 of 2 nodes joined at 127.0.0.1:{port} within 5 s: start the same command on "
            "every node (the same PET_NNODES, PET_MASTER_ADDR and PET_MASTER_PORT), check that "
            "every node can reach 127.0.0.1:{port} (a firewall, a wrong address), " + ADVICE,
            id="node 0 alone",
        ),
        pytest.param(
            {"PET_NODE_RANK": "1"},
            "node 0 did not answer at 127.0.0.1:{port} within 5 s: start the same command on "
            "node 0 (PET_NODE_RANK=0), check that every node has node 0's address in "
            "PET_MASTER_ADDR and PET_MASTER_PORT and that this node can reach it (a firewall), "
            + ADVICE,
            id="node 1 without node 0",
        ),
        pytest.param(
            {"PET_RDZV_BACKEND": "c10d", "PET_RDZV_ENDPOINT": "127.0.0.1:{port}"},
            "not all 2 nodes joined at 127.0.0.1:{port} within 5 s: start the same command on "
            "every node (the same PET_NNODES, PET_RDZV_ENDPOINT), check that every node can "
            "reach 127.0.0.1:{port} (a firewall, a wrong address), " + ADVICE,
            id="c10d alone",
        ),
        pytest.param(
            {"PET_MASTER_ADDR": "no-such-node.invalid"},
            "no-such-node.invalid, in PET_MASTER_ADDR, is no host name this machine knows, so "
            "the rendezvous at no-such-node.invalid:{port} never started: set PET_MASTER_ADDR "
            "on every node to node 0's address (its IP, or a name every node resolves)",
            id="an unknown host name",
        ),
    ],
)
def test_a_rendezvous_that_fails_ends_in_one_line_after_its_wait(
    tmp_path: Path, env: dict[str, str], error: str
) -> None:
    """Past its wait a node whose other node never came (or whose rendezvous address leads
    nowhere) says so in one line, with what to do, and no traceback of torchrun's."""
    cwd = _workdir(tmp_path / "alone", 1)
    port = _free_port()
    env = {key: value.format(port=port) for key, value in env.items()}
    started = time.monotonic()
    process = _multi_node_train(cwd, port, PET_RDZV_CONF="timeout=5,join_timeout=5", **env)
    _, stderr = finish(process, 5 + MARGIN_S, "a node of two, alone, with a 5 s rendezvous")
    seconds = time.monotonic() - started
    host = env.get("PET_MASTER_ADDR", "127.0.0.1")
    assert stderr.splitlines() == [
        f"waiting as {WAIT} says for 2 nodes to join at {host}:{port}: start the same command "
        "on every node",
        f"launching torchrun: -m cnnlab.distributed --nproc-per-node=1 {ROOT}/stages/train.py "
        "lenet digits",
        "error: distributed: " + error.format(port=port),
    ]
    assert process.returncode == 2
    assert seconds < 5 + MARGIN_S


def test_a_node_waits_for_node_0_for_the_stated_time_and_no_longer(monkeypatch) -> None:
    """torch's own client would back off past the wait (107 s past a 120 s one, measured)."""
    from cnnlab.errors import UserError

    port = _free_port()
    for key in ("PET_RDZV_ENDPOINT", "PET_RDZV_BACKEND", "PET_MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PET_NODE_RANK", "1")
    monkeypatch.setenv("PET_MASTER_PORT", str(port))
    monkeypatch.setenv("PET_RDZV_CONF", "timeout=2,join_timeout=2")
    started = time.monotonic()
    with pytest.raises(UserError, match=f"node 0 did not answer at 127.0.0.1:{port} within 2 s"):
        distributed.wait_for_node_0(poll_s=0.1)
    assert 2 <= time.monotonic() - started < 4
    with socket.socket() as node0:  # node 0 comes late, and is joined at once
        node0.bind(("127.0.0.1", port))
        late = threading.Timer(0.5, node0.listen)
        late.start()
        started = time.monotonic()
        distributed.wait_for_node_0(poll_s=0.1)
        late.join()
    assert time.monotonic() - started < 1.5


def test_the_rendezvous_is_read_as_torchrun_reads_it(monkeypatch) -> None:
    """An IPv6 endpoint in brackets, and spaces in PET_RDZV_CONF, both of which torchrun
    accepts: a node waits for node 0 at the address torchrun will use, as long as it says."""
    for key in ("PET_RDZV_BACKEND", "PET_MASTER_ADDR", "PET_MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PET_RDZV_ENDPOINT", " [::1]:29401 ")
    assert distributed.rendezvous_endpoint() == ("::1", 29401)
    monkeypatch.setenv("PET_RDZV_ENDPOINT", "[fe80::1]")
    assert distributed.rendezvous_endpoint() == ("fe80::1", 29400)
    monkeypatch.setenv("PET_RDZV_ENDPOINT", "node0:29402")
    assert distributed.rendezvous_endpoint() == ("node0", 29402)
    monkeypatch.setenv("PET_RDZV_CONF", "join_timeout=60, timeout=5")
    assert distributed.rendezvous_wait_s() == 5
    monkeypatch.setenv("PET_RDZV_BACKEND", "c10d")
    assert distributed.rendezvous_wait_s() == 60
    monkeypatch.delenv("PET_RDZV_BACKEND")
    if not socket.has_ipv6:
        return
    with socket.socket(socket.AF_INET6) as node0:
        try:
            node0.bind(("::1", 0))
        except OSError:
            return  # no IPv6 loopback here
        node0.listen()
        monkeypatch.setenv("PET_RDZV_ENDPOINT", f"[::1]:{node0.getsockname()[1]}")
        monkeypatch.setenv("PET_NODE_RANK", "1")
        monkeypatch.setenv("PET_RDZV_CONF", "timeout=2")
        started = time.monotonic()
        distributed.wait_for_node_0(poll_s=0.1)  # node 0 is there: joined at once
    assert time.monotonic() - started < 1


def test_ctrl_c_while_node_0_waits_ends_it_at_once(tmp_path: Path) -> None:
    """torch's wait for the nodes is C++, which used to hold Ctrl-C back to the wait's end
    (then a traceback); no worker has started, so the launcher just ends."""
    cwd = _workdir(tmp_path / "alone", 1)
    port = _free_port()
    process = _multi_node_train(cwd, port, PET_RDZV_CONF="timeout=300,join_timeout=300")

    def listening() -> bool:  # node 0's rendezvous store is up: the wait has begun
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, "node 0's rendezvous store", 120, interval_s=0.2, process=process)
    process.send_signal(signal.SIGINT)
    _, stderr = finish(process, 30, "node 0, after Ctrl-C while waiting for node 1")
    assert process.returncode == -signal.SIGINT
    assert "Traceback" not in stderr


def test_the_error_is_kept_for_what_is_not_a_rendezvous_failure() -> None:
    from torch.distributed import DistStoreError
    from torch.distributed.elastic.multiprocessing import SignalException

    assert distributed.rendezvous_failure(RuntimeError("a bug")) is None
    assert distributed.rendezvous_failure(DistStoreError("Broken pipe")) is None
    stopped = SignalException("Process 1 got signal: 15", sigval=signal.SIGTERM)
    assert distributed.rendezvous_failure(stopped) is None  # torchrun's own report stays


def test_sigterm_to_a_multi_node_launch_stops_its_workers(tmp_path: Path) -> None:
    """Two nodes on this machine (two checkouts): SIGTERM to node 0's launcher mid-training
    (what DVC or a scheduler sends) stops its worker, as torchrun's would; the worker logs
    C++ as the user's environment says (the launcher's own quiet level is not passed on)."""
    import psutil

    port = _free_port()
    nodes = []
    for rank in (0, 1):
        cwd = _workdir(tmp_path / f"node{rank}", 1)
        params = yaml.safe_load((cwd / "params.yaml").read_text())
        (cwd / "params.yaml").write_text(yaml.safe_dump({**params, "epochs": 50}))
        nodes.append(_multi_node_train(cwd, port, PET_NODE_RANK=str(rank)))
    node0, node1 = nodes
    try:
        wait_for(
            (tmp_path / "node0/checkpoints" / f"{RUN}.pt").exists,
            "node 0's first resume state",
            180,
            process=node0,
        )
        launcher = psutil.Process(node0.pid)
        assert launcher.cmdline()[1:3] == ["-m", "cnnlab.distributed"]
        workers = launcher.children(recursive=True)
        assert workers, "node 0's launcher has no worker"
        for worker in workers:
            level = worker.environ().get("TORCH_CPP_LOG_LEVEL")
            assert level == os.environ.get("TORCH_CPP_LOG_LEVEL")
        node0.send_signal(signal.SIGTERM)
        _, stderr = finish(node0, 60, "node 0's launcher after SIGTERM")
        assert node0.returncode != 0
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers outlived their launcher: {alive}\n{stderr}"
        finish(node1, 120, "node 1, its peer gone")
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.communicate(timeout=60)
