"""Data-parallel training with PyTorch's own machinery: torchrun and DistributedDataParallel.

Every rank draws the same permutation per epoch; global batch ``k`` is ``order[k*B:(k+1)*B]``
as in one process, and rank ``r`` takes the ``r``-th of its equal slices. The last, partial
global batch is cut to a multiple of the world size, so every rank makes the same steps. DDP
averages the equal slices' gradients: the same step as one process, up to summation order.
Nothing here knows about files; the stage decides that only rank 0 writes.

Run as ``python -m cnnlab.distributed`` this module is torchrun (:func:`launch`), which the
train stage runs: a failed rendezvous, or workers that each stopped with a one-line error,
end in one line, not torchrun's traceback.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

#: Environment variables torchrun sets in every worker.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: torchrun reads a rendezvous from these (its PET_* spelling of --nnodes, --rdzv-endpoint):
#: when one is set the user has described a multi-node job, so the launch is not standalone.
MULTI_NODE_ENV = ("PET_NNODES", "PET_RDZV_ENDPOINT", "PET_MASTER_ADDR")


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank 0 of 1 when not distributed."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and metrics."""
        return self.rank == 0


SINGLE = World()


def under_torchrun() -> bool:
    return all(key in os.environ for key in TORCHRUN_ENV)


def multi_node_requested() -> bool:
    """torchrun's PET_* variables describe a rendezvous of several nodes."""
    return any(os.environ.get(key) for key in MULTI_NODE_ENV)


def should_launch(nproc: int) -> bool:
    """Start torchrun from the stage: several processes wanted, and not already under it."""
    return not under_torchrun() and (nproc > 1 or multi_node_requested())


def world_from_env() -> World:
    """The rank and world size torchrun gave this process, or the single-process world."""
    if not under_torchrun():
        return SINGLE
    return World(
        rank=int(os.environ["RANK"]),
        size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )


def torchrun_command(nproc: int, script: str | Path, args: list[str]) -> list[str]:
    """torchrun, run by :data:`LAUNCHER`, starting ``nproc`` copies of ``script`` here:
    standalone unless torchrun's PET_* variables describe a multi-node rendezvous, which
    torchrun then reads itself."""
    standalone = [] if multi_node_requested() else ["--standalone"]
    command = [sys.executable, "-m", LAUNCHER, f"--nproc-per-node={nproc}", *standalone]
    return [*command, str(script), *args]


def relaunch_under_torchrun(nproc: int, threads: int) -> None:
    """Replace this process by torchrun running this script with the same arguments.

    ``exec``, so that DVC waits on torchrun and Ctrl-C or SIGTERM reach it (and through it
    every worker); OMP_NUM_THREADS set keeps torchrun's oversubscription warning quiet.
    ``exec`` also drops the stage's writer lock: rank 0 takes it again.
    """
    command = torchrun_command(nproc, sys.argv[0], sys.argv[1:])
    if multi_node_requested():
        check_rendezvous_port()
        conf = os.environ.get("PET_RDZV_CONF")
        if conf:
            wait = f"as PET_RDZV_CONF={conf} says"
        else:  # torchrun's default: 600 s, without a word
            os.environ["PET_RDZV_CONF"] = f"timeout={JOIN_TIMEOUT_S},join_timeout={JOIN_TIMEOUT_S}"
            wait = f"up to {JOIN_TIMEOUT_S} s (PET_RDZV_CONF=timeout=N,join_timeout=N changes it)"
        host, port = rendezvous_endpoint()
        nodes = os.environ.get("PET_NNODES", "all")
        print(
            f"waiting {wait} for {nodes} nodes to join at {host}:{port}: start the same "
            "command on every node",
            file=sys.stderr,
            flush=True,
        )
        if "TORCH_CPP_LOG_LEVEL" not in os.environ:  # the launcher's, dropped for the workers
            os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
            os.environ[_QUIET_LAUNCHER] = "1"
    print(f"launching torchrun: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    sys.stdout.flush()
    os.execv(command[0], command)


#: How long a multi-node launch waits for every node (torchrun's own default is 600 s).
JOIN_TIMEOUT_S = 300
#: What the stage runs: this module, torchrun under :func:`launch`.
LAUNCHER = "cnnlab.distributed"
#: Set by the stage with TORCH_CPP_LOG_LEVEL=FATAL when the user set no C++ log level: the
#: launcher drops both once torch has read them, so its own retries and timeouts are quiet
#: (the error says what happened) while the workers log as the user's environment says.
_QUIET_LAUNCHER = "CNNLAB_QUIET_LAUNCHER"


def rendezvous_endpoint() -> tuple[str, int]:
    """Where torchrun's rendezvous of several nodes meets: PET_RDZV_ENDPOINT (c10d), else
    torchrun's static PET_MASTER_ADDR:PET_MASTER_PORT with its defaults."""
    endpoint = os.environ.get("PET_RDZV_ENDPOINT", "").strip()
    if endpoint:  # read as torchrun reads it: an IPv6 address in brackets, "[::1]:29400"
        host, _, port = endpoint.rpartition(":")
        if not (host and port.isdigit()):
            host, port = endpoint, "29400"
        if len(host) > 1 and host[0] == "[" and host[-1] == "]":
            host = host[1:-1]
        return host, int(port)
    return os.environ.get("PET_MASTER_ADDR", "127.0.0.1"), int(
        os.environ.get("PET_MASTER_PORT", "29500")
    )


def check_rendezvous_port() -> None:
    """Node 0 of a static rendezvous listens on the master port: one taken here would end
    in a long EADDRINUSE traceback from torchrun."""
    import errno
    import socket

    from cnnlab.errors import UserError

    if (
        os.environ.get("PET_RDZV_ENDPOINT")
        or os.environ.get("PET_RDZV_BACKEND", "static") != "static"
    ):
        return  # c10d: whichever node is on the endpoint's host serves it, or joins it
    if os.environ.get("PET_NODE_RANK", "0") != "0":
        return
    host, port = rendezvous_endpoint()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's store does
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return  # not an address of this machine: torchrun says what is wrong
            raise UserError(
                f"distributed: port {port} on {host} is in use (another torchrun, or another "
                "program), and node 0 must listen on it: set PET_MASTER_PORT to a free port "
                "on every node, or stop what holds it"
            ) from None


def rendezvous_wait_s() -> int:
    """How long torchrun waits for the nodes: PET_RDZV_CONF's ``timeout`` (static
    rendezvous) or ``join_timeout`` (c10d), else torchrun's default, 600 s."""
    conf = os.environ.get("PET_RDZV_CONF", "")
    pairs = (item.split("=", 1) for item in conf.split(",") if "=" in item)
    values = {key.strip(): value.strip() for key, value in pairs}  # as torchrun reads them
    key = "timeout" if _static_rendezvous() else "join_timeout"
    try:
        return int(float(values[key]))
    except (KeyError, ValueError):
        return 600


def _static_rendezvous() -> bool:
    return os.environ.get("PET_RDZV_BACKEND", "static") == "static"


#: The end of every message about a wait that ran out.
_LONGER = "or wait longer with PET_RDZV_CONF=timeout=N,join_timeout=N"


def _address_names() -> tuple[str, str]:
    """The variable holding the rendezvous host, and those to name for host and port."""
    if os.environ.get("PET_RDZV_ENDPOINT"):
        return "PET_RDZV_ENDPOINT", "PET_RDZV_ENDPOINT"
    return "PET_MASTER_ADDR", "PET_MASTER_ADDR and PET_MASTER_PORT"


def rendezvous_failure(exc: BaseException) -> Exception | None:
    """The one-line :class:`~cnnlab.errors.UserError` for a rendezvous that failed the
    ways a user can fix (nodes missing, an address that leads nowhere); ``None`` for
    anything else, which keeps torchrun's traceback."""
    import re

    from torch.distributed import DistNetworkError, DistStoreError
    from torch.distributed.elastic.rendezvous.api import (
        RendezvousConnectionError,
        RendezvousTimeoutError,
    )

    from cnnlab.errors import UserError

    host, port = rendezvous_endpoint()
    where = f"{host}:{port}"
    address, names = _address_names()
    message = str(exc)
    unreachable = isinstance(exc, RendezvousConnectionError) or (
        isinstance(exc, DistNetworkError) and "trying to connect" in message
    )
    if unreachable and not _resolves(host):
        return _unknown_host()
    if isinstance(exc, RendezvousTimeoutError) or (
        isinstance(exc, DistStoreError) and "waiting for clients" in message
    ):
        count = re.search(r"(\d+)/(\d+) clients joined", message)
        nodes = os.environ.get("PET_NNODES", "all")
        joined = f"only {count[1]} of {count[2]}" if count else f"not all {nodes}"
        return UserError(
            f"distributed: {joined} nodes joined at {where} within {rendezvous_wait_s()} s: "
            f"start the same command on every node (the same PET_NNODES, {names}), check "
            f"that every node can reach {where} (a firewall, a wrong address), {_LONGER}"
        )
    if isinstance(exc, DistNetworkError) and unreachable:
        if not _static_rendezvous() or os.environ.get("PET_NODE_RANK", "0") != "0":
            return _no_answer()
        return UserError(
            "distributed: this is node 0 (PET_NODE_RANK=0), which serves the rendezvous, yet "
            f"nothing answered at {where} within {rendezvous_wait_s()} s: set {address} on "
            "every node to this machine's address (one the other nodes reach)"
        )
    if isinstance(exc, RendezvousConnectionError):
        cause = str(exc.__cause__ or exc).strip().splitlines()[0].rstrip(".")
        return UserError(
            f"distributed: cannot reach the rendezvous at {where} ({cause}): start the same "
            f"command on {host}, which serves it, and check {names} and that this node can "
            f"reach {where} (a firewall, a wrong address)"
        )
    return None


def _unknown_host() -> Exception:
    from cnnlab.errors import UserError

    host, port = rendezvous_endpoint()
    address, _ = _address_names()
    return UserError(
        f"distributed: {host}, in {address}, is no host name this machine knows, so the "
        f"rendezvous at {host}:{port} never started: set {address} on every node to node 0's "
        "address (its IP, or a name every node resolves)"
    )


def _no_answer() -> Exception:
    """Node 0 never answered this node (another)."""
    from cnnlab.errors import UserError

    host, port = rendezvous_endpoint()
    if not _resolves(host):
        return _unknown_host()
    return UserError(
        f"distributed: node 0 did not answer at {host}:{port} within {rendezvous_wait_s()} s: "
        "start the same command on node 0 (PET_NODE_RANK=0), check that every node has node "
        f"0's address in {_address_names()[1]} and that this node can reach it (a firewall), "
        + _LONGER
    )


def wait_for_node_0(poll_s: float = 1.0) -> None:
    """On a node other than 0 of a static rendezvous, wait for node 0's port to accept a
    connection, for the stated wait at most. torch's own client backs off between its tries
    by up to most of the wait again (83 s past a 120 s wait, measured), so it would end long
    past the stated time, and join a late node 0 late."""
    import socket
    import time

    if not _static_rendezvous() or os.environ.get("PET_NODE_RANK", "0") == "0":
        return
    endpoint = os.environ.get("PET_RDZV_ENDPOINT", "").strip()
    if endpoint and not endpoint.rpartition(":")[2].isdigit():
        return  # no port: torchrun says so
    host, port = rendezvous_endpoint()
    deadline = time.monotonic() + rendezvous_wait_s()
    while (left := deadline - time.monotonic()) > 0:
        try:
            with socket.create_connection((host, port), timeout=min(left, 10)):
                return
        except OSError:  # refused, unreachable, no such name (yet): node 0 may still come
            time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
    raise _no_answer()


def _resolves(host: str) -> bool:
    import socket

    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def launch(argv: list[str]) -> None:
    """torchrun on ``argv``, as ``torchrun`` would run it (its ``main``: a failed worker is
    reported as torchrun reports it), but a rendezvous that fails the ways a user can fix
    ends in one line saying what to do, exit code 2, instead of torchrun's traceback, and so
    does a job whose every failed worker exited with 2: each said why in one line already."""
    import signal

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    from cnnlab.errors import UserError

    if "SIGINT" in os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE", "SIGINT"):
        # Ctrl-C while waiting: end at once (torch's wait for the nodes is C++ that defers
        # Python's handler to the wait's end, then a traceback); no worker runs yet, and
        # torchrun sets its own handler before it starts one.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        wait_for_node_0()
        main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except ChildFailedError as exc:
        # the first to fail said why in one line (exit 2); torchrun then stopped the others
        # (SIGTERM) unless they had already stopped the same way
        _, first = exc.get_first_failure()
        stopped = (2, -signal.SIGTERM)
        if first.exitcode == 2 and all(f.exitcode in stopped for f in exc.failures.values()):
            sys.exit(2)
        raise
    except Exception as exc:
        error = rendezvous_failure(exc)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


@contextlib.contextmanager
def joined(world: World, device: torch.device, backend: str = "auto") -> Iterator[torch.device]:
    """This rank's device (one GPU per process: ``cuda:<local rank>``), inside torchrun's
    process group for the run (``auto``: NCCL for CUDA, gloo otherwise); alone, ``device``."""
    if not world.distributed:
        yield device
        return
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
        device = torch.device("cuda", world.local_rank)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    try:
        yield device
    finally:
        dist.destroy_process_group()


def broadcast_from_main(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank (pickled): the resume state only rank 0 read."""
    if not world.distributed:
        return value
    box = [value if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def global_batches(n: int, batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """(start, length) of every global batch of an epoch (``batch_size`` splits evenly over
    the ranks: :meth:`cnnlab.params.Params.global_batch_size`); the last partial one cut to
    a multiple of ``world_size``, or dropped if that leaves nothing."""
    batches = [(start, batch_size) for start in range(0, n - batch_size + 1, batch_size)]
    rest = n % batch_size
    last = rest - rest % world_size
    if last:
        batches.append((n - rest, last))
    return batches


def rank_slice(order: torch.Tensor, start: int, length: int, world: World) -> torch.Tensor:
    """This rank's equal share of the global batch ``order[start:start+length]``."""
    share = length // world.size
    begin = start + world.rank * share
    return order[begin : begin + share]


def rank_range(n: int, world: World) -> tuple[int, int]:
    """This rank's contiguous share of ``n`` items (the whole for one process)."""
    share = -(-n // world.size)
    return min(n, world.rank * share), min(n, (world.rank + 1) * share)


def _alone() -> bool:
    """No process group: a single process, whose sums and flags are the job's."""
    return not (dist.is_available() and dist.is_initialized())


def all_reduce_sum(device: torch.device, *values: torch.Tensor) -> list[torch.Tensor]:
    """Each counter summed over all ranks, back on the CPU (NCCL reduces on ``device``)."""
    if _alone():
        return list(values)
    out = []
    for value in values:
        value = value.to(device, copy=True)
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        out.append(value.cpu())
    return out


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank: after DDP's sync the last
    training forward updated each rank's copy from its own slice."""
    if _alone():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def all_ranks_true(flag: torch.Tensor) -> torch.Tensor:
    """A 0-dim bool tensor ANDed over the ranks, left on its device: no host read."""
    if _alone():
        return flag
    value = flag.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value.bool()


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DDP across ranks (it averages the gradients in ``backward``); the model alone."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


if __name__ == "__main__":  # the stage's multi-node launcher: python -m cnnlab.distributed
    if os.environ.pop(_QUIET_LAUNCHER, None):  # torch has read it: the workers do not
        os.environ.pop("TORCH_CPP_LOG_LEVEL", None)
    launch(sys.argv[1:])
