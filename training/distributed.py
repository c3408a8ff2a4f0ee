"""Data-parallel training under ``torchrun``: process group, shards, reductions.

``torchrun --nproc_per_node K -m training train-rm ...`` starts K copies of the
CLI with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in
the environment. :func:`init` starts the process group from them (NCCL when CUDA
is available, gloo on CPU); without them (a plain ``python -m training ...``)
nothing is started and every helper here is the identity for a world of one, so
the single-process code path stays what it was.

The recipe (what ``DistributedSampler`` + ``DistributedDataParallel`` do, made
exact): every rank builds the same global batch schedule from the same seed and
runs only its strided share of each global batch (:func:`shard`); DDP averages the
gradients, and :func:`shard_weight` scales each rank's mean loss so that the
average is the gradient of the global batch's mean loss even when the batch does
not split evenly. One optimizer step therefore sees the same gradient as in one
process, up to the order of float summation.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
# Long enough for rank 0 to write a large checkpoint while the others wait.
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place in the group; ``World()`` is a single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """The rank that writes checkpoints, prints and reports progress."""
        return self.rank == 0

    def as_dict(self, global_batch: int) -> dict[str, Any]:
        """What the log and the checkpoint's metadata record about the run."""
        return {
            "world_size": self.size,
            "backend": self.backend,
            "global_batch_size": global_batch,
            # The largest share of a global batch one rank runs.
            "per_rank_batch_size": -(-global_batch // self.size),
        }


def launched() -> bool:
    """True in a process that torchrun (or any launcher) started as one of >1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str | None = None) -> World:
    """Join the process group torchrun describes; ``World()`` when not launched.

    ``device``: the requested torch device ("cpu" forces gloo even where CUDA is
    available); each CUDA rank uses the GPU of its ``LOCAL_RANK``.
    """
    if not launched():
        return World()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device or "cuda").startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    return current()


def current() -> World:
    """The world of the process group already started, or ``World()``."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=str(dist.get_backend()),
    )


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(world: World, requested: str | None) -> torch.device:
    """``requested``, else this rank's GPU when there is one, else the CPU."""
    if requested:
        dev = torch.device(requested)
        if world.size > 1 and dev.type == "cuda" and dev.index is None:
            return torch.device("cuda", world.local_rank)
        return dev
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", world.local_rank if world.size > 1 else None)


def shard(items: Sequence[T], world: World) -> list[T]:
    """This rank's strided share of one global batch (rank r gets r, r+K, ...).

    Strided rather than contiguous: the schedule sorts pairs by length inside a
    batch, so striding gives every rank a similar mix of lengths (and so similar
    step times)."""
    return list(items[world.rank :: world.size])


def shard_weight(n_local: int, n_global: int, world: World) -> float:
    """Factor on this rank's mean loss so that DDP's gradient average equals the
    gradient of the mean over the whole global batch: Σ_r (n_r/N)·g_r =
    (1/K)·Σ_r w_r·g_r with w_r = n_r·K/N. Exactly 1.0 in one process."""
    return n_local * world.size / n_global


def all_reduce_sum_(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (the identity in one process)."""
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def summed(tensor: torch.Tensor, world: World, device: torch.device) -> torch.Tensor:
    """``tensor`` summed over ranks, on its own device (NCCL reduces on the GPU)."""
    if world.size == 1:
        return tensor
    return all_reduce_sum_(tensor.to(device), world).to(tensor.device)


def sum_float(value: float, world: World, device: torch.device) -> float:
    """A Python float summed over ranks."""
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    return float(all_reduce_sum_(t, world))


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


class _Call(torch.nn.Module):
    """``fn(module, *args)`` as a module's forward, so that DDP's hooks (and its
    gradient all-reduce) run around the training forward even when that forward
    is not ``module.forward`` itself (the reward model's prefix-shared path)."""

    def __init__(self, module: torch.nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, *args: Any) -> Any:
        return self.fn(self.module, *args)


@dataclass
class DataParallel:
    """The training forward of ``module``: ``forward(*args)`` runs ``fn(module,
    *args)``, through DDP when the world has more than one rank; ``sync(flag)``
    is the context of one backward, all-reducing gradients only when ``flag``
    (the last micro-batch before an optimizer step)."""

    forward: Callable[..., Any]
    ddp: torch.nn.parallel.DistributedDataParallel | None = None

    @contextmanager
    def sync(self, flag: bool) -> Iterator[None]:
        ctx = self.ddp.no_sync() if self.ddp is not None and not flag else nullcontext()
        with ctx:
            yield


def data_parallel(
    module: torch.nn.Module,
    fn: Callable[..., Any],
    world: World,
    device: torch.device,
) -> DataParallel:
    if world.size == 1:
        return DataParallel(functools.partial(fn, module))
    ddp = torch.nn.parallel.DistributedDataParallel(
        _Call(module, fn),
        device_ids=[device.index] if device.type == "cuda" else None,
        # Backbones carry weights the reward never uses (BERT's pooler).
        find_unused_parameters=True,
        # The models have no batch statistics; nothing to keep in step.
        broadcast_buffers=False,
    )
    return DataParallel(ddp, ddp)


# ------------------------------------------------------------------ launching


class LaunchError(RuntimeError):
    """A rank of a launched training run failed; names the rank and its error."""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the rank gets SIGKILL when the process that launched it dies, so a
    worker killed with kill -9 leaves no rank training on (and holding a GPU)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()


def launch(
    argv: Sequence[str],
    nproc: int,
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Run ``python -m training *argv`` on ``nproc`` local ranks and return rank
    0's standard output; :class:`LaunchError` if any rank fails (the others are
    stopped).

    What ``torchrun --standalone --nproc_per_node K`` sets up (RANK, LOCAL_RANK,
    WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT: a static rendezvous on this
    machine), launched directly so that each rank dies with its parent (Linux's
    parent-death signal, which torch.distributed.elastic does not set: a torchrun
    agent killed with SIGKILL leaves its ranks running). The signal follows the
    launching thread, so call this from the thread that waits for the run. Used
    by the Celery worker's training jobs (``PAIRLOOP_TRAIN_NPROC``)."""
    import subprocess
    import sys
    import tempfile

    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, not {nproc}")
    base = {**(env if env is not None else os.environ)}
    base.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        TOKENIZERS_PARALLELISM="false",
    )
    if "OMP_NUM_THREADS" not in base:
        base["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as files:
        logs = [
            (
                files.enter_context(tempfile.TemporaryFile(mode="w+")),
                files.enter_context(tempfile.TemporaryFile(mode="w+")),
            )
            for _ in range(nproc)
        ]
        try:
            for rank, (out, err) in enumerate(logs):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "training", *argv],
                        env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                        stdout=out,
                        stderr=err,
                        preexec_fn=_die_with_parent,
                    )
                )
            _wait_all(procs, logs, nproc, timeout)
            out = logs[0][0]
            out.seek(0)
            return out.read()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()


def _wait_all(procs, logs, nproc: int, timeout: float | None) -> None:
    """Until every rank exits 0; the first that fails (or the timeout) raises."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        bad = next((r for r, c in enumerate(codes) if c not in (None, 0)), None)
        if bad is not None:
            err = logs[bad][1]
            err.seek(0)
            tail = err.read()[-3000:].strip()
            raise LaunchError(
                f"rank {bad} of {nproc} exited with code {codes[bad]}: {tail}"
            )
        if all(c == 0 for c in codes):
            return
        if deadline is not None and time.monotonic() > deadline:
            raise LaunchError(f"training on {nproc} processes ran past {timeout} s")
        time.sleep(0.2)
