"""``igr eval --devices N``: the test set's batches dealt over N processes, their restorations gathered on rank 0.

Batch ``i`` of a row (the batches one process would form: the same samples, the same order, the same size) is
restored by rank ``i mod N`` and sent to rank 0, which scores every batch in order exactly as a single process does.
An image's noise comes from its sample key (:func:`igr.sampling.image_generators`) and it is restored in the very
batch it would be in with one process, so the restored images (same operations in the same order) and therefore
metrics.json are those of one process (on CPUs, at the same torch thread count: spawned ranks take this process's,
torchrun sets OMP_NUM_THREADS=1; kernels split over other numbers of threads round differently).

Processes: ``igr eval --devices N`` spawns N workers itself (rank r on ``cuda:r`` or the CPU). Launched under
torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` set: one or several nodes), it
spawns nothing and joins torchrun's group; rank r then uses ``cuda:LOCAL_RANK``. Every node must read the same
pipeline folders and shards at the same paths; rank 0 alone writes the report and the real-set feature cache.

Transport: gloo, on GPUs too. The only traffic is each batch's uint8 predictions (B,3,H,W), already on the CPU;
NCCL would copy them to a GPU and back for nothing, and gloo runs the same on a CPU box and across nodes over TCP.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch

from igr.errors import IGRError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# A rank waits for rank 0 between batches; a 1024×768 batch of 8 at 25 steps takes minutes on a slow card.
TIMEOUT = timedelta(hours=2)


@dataclass
class Spread:
    """This process's place in the evaluation: rank ``rank`` of ``world``, restoring batches ``i ≡ rank (mod
    world)``. ``world == 1`` is a plain single-process evaluation (no process group)."""

    rank: int = 0
    world: int = 1
    _pending: list = field(default_factory=list)

    def owner(self, i: int) -> int:
        return i % self.world

    def mine(self, i: int) -> bool:
        return self.owner(i) == self.rank

    def send(self, pred8: torch.Tensor) -> None:
        """Hand a batch's uint8 predictions to rank 0 and go on restoring (at most one send in flight)."""
        import torch.distributed as dist

        self.flush()
        pred8 = pred8.contiguous()
        self._pending = [(dist.isend(pred8, dst=0), pred8)]  # the tensor must live until the send completes

    def recv(self, i: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Batch ``i``'s uint8 predictions (``shape``) from the rank that restored it."""
        import torch.distributed as dist

        out = torch.empty(shape, dtype=torch.uint8)
        dist.recv(out, src=self.owner(i))
        return out

    def flush(self) -> None:
        for work, _ in self._pending:
            work.wait()
        self._pending = []


def torchrun_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when this process was started by torchrun (or any launcher setting its
    variables) for more than one process; None otherwise."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return None
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise IGRError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {', '.join(missing)} are not: launch "
                       "with torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def rank_device(device: str, local_rank: int, world: int) -> str:
    """The device of the process with ``local_rank`` on its node: ``cuda`` → ``cuda:local_rank``; ``cpu`` stays."""
    if world == 1 or device == "cpu":
        return device
    if device == "cuda":
        return f"cuda:{local_rank}"
    raise IGRError(f"--device {device}: with several processes give cuda or cpu (rank r takes cuda:r)")


@contextlib.contextmanager
def joined(rank: int, world: int, init_method: str):
    """This process inside the evaluation's gloo group, left on the way out whatever happens."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        yield Spread(rank, world)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, threads: int, run: Callable, kwargs: dict, folder: str) -> None:
    """One spawned rank: the caller's thread count (kernels split over another number of threads round
    differently), its device, the group; rank 0 leaves the result in ``folder``, a user error leaves its line."""
    import sys

    torch.set_num_threads(threads)
    kwargs = {**kwargs, "device": rank_device(kwargs["device"], rank, world)}
    try:
        with joined(rank, world, f"tcp://127.0.0.1:{port}") as spread:
            result = run(spread=spread, **kwargs)
    except IGRError as exc:
        Path(folder, f"error.{rank}").write_text(str(exc))
        sys.exit(1)
    if rank == 0:
        Path(folder, "result.pkl").write_bytes(pickle.dumps(result))


def spawn(world: int, run: Callable, kwargs: dict):
    """Run ``run(spread=…, **kwargs)`` in ``world`` fresh processes on this node and return rank 0's result. When
    one rank fails the others are stopped (torch.multiprocessing.spawn); a user error comes back as its one line."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    with tempfile.TemporaryDirectory(prefix="igr-eval-") as folder:
        try:
            mp.spawn(_worker, args=(world, _free_port(), torch.get_num_threads(), run, kwargs, folder),
                     nprocs=world, join=True)
        except ProcessException as exc:
            errors = sorted(Path(folder).glob("error.*"))
            if errors:
                raise IGRError(errors[0].read_text()) from None
            raise IGRError(f"evaluation process {exc.error_index} of {world} failed (its traceback is above)") from exc
        return pickle.loads(Path(folder, "result.pkl").read_bytes())


@contextlib.contextmanager
def restoring(device: str, dtype: torch.dtype):
    """TF32 matmuls while a model restores in float32 on CUDA (cuDNN's convolutions use TF32 by default already);
    the metric networks keep the precision they had. Through ``set_float32_matmul_precision``: torch ≥ 2.9 raises
    when ``allow_tf32`` is read after anything set its newer ``fp32_precision`` flags."""
    if not (str(device).startswith("cuda") and dtype == torch.float32):
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
