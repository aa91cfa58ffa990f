"""torchrun / DDP glue: one process per GPU (or CPU rank), NCCL on GPU, gloo on CPU.

Under torchrun the process group meets in the elastic agent's store (``MASTER_ADDR:MASTER_PORT``,
``TORCHELASTIC_USE_AGENT_STORE=True``). That store outlives the workers: after a restart
(``--max-restarts``) it still holds the killed attempt's keys, and a stock
``init_process_group`` of the new workers reads the dead processes' addresses (gloo's peer
addresses, NCCL's unique id) whenever the peer's new key is not written yet. Then gloo either
fails ("connectFullMesh failed ... Connection refused") or both ranks wait for each other to
connect until the 30 min timeout. So the workers first agree on a key namespace of their own
(:func:`fresh_namespace`) and meet there.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values, device):
        """Sum a list of floats over ranks (identity with one process)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj):
        """Every rank's ``obj`` as a list (rank order); ``[obj]`` with one process."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.enabled:
            dist.barrier()


def init_distributed(device: str) -> Dist:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device == "gpu":
            torch.cuda.set_device(local)
        backend = "nccl" if device == "gpu" else "gloo"
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True):
            from torch.distributed.constants import default_pg_timeout

            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                  world, is_master=False, timeout=default_pg_timeout)
            space = fresh_namespace(store, rank, world)
            dist.init_process_group(backend, store=dist.PrefixStore(space, store), rank=rank,
                                    world_size=world)
        else:  # the store is rank 0's own, new with every start
            dist.init_process_group(backend)
    return Dist(rank, world, local)


_LEADER = "ipmix_dali/pg/leader"


def fresh_namespace(store, rank: int, world: int, patience: float = 1.0,
                    timeout: timedelta = timedelta(minutes=30)) -> str:
    """A store prefix that only this start's processes use, the same on every rank.

    Rank 0 draws a random token and publishes it; every other rank reads it and says hello in
    the token's namespace with a random token of its own, which rank 0 echoes back. A token
    read from the store may be a dead attempt's (its rank 0 never answers): after ``patience``
    seconds without its echo the rank reads the token again. Every process of the previous
    attempt is gone before torchrun starts the next one, so a token that answers is this
    start's. Rank 0 returns when every rank has said hello (a barrier), the others when their
    echo came."""
    if rank == 0:
        token = uuid.uuid4().hex
        store.set(_LEADER, token)
        for r in range(1, world):  # waits (store timeout) for each rank to find this token
            store.set(f"ipmix_dali/pg/{token}/welcome/{r}",
                      store.get(f"ipmix_dali/pg/{token}/hello/{r}"))
        return f"ipmix_dali/pg/{token}"
    mine = uuid.uuid4().hex.encode()
    deadline = time.monotonic() + timeout.total_seconds()
    while time.monotonic() < deadline:
        token = store.get(_LEADER).decode()  # waits for the first start's rank 0
        store.set(f"ipmix_dali/pg/{token}/hello/{rank}", mine)
        welcome = f"ipmix_dali/pg/{token}/welcome/{rank}"
        answer = time.monotonic() + patience
        while time.monotonic() < answer:
            if store.check([welcome]) and store.get(welcome) == mine:
                return f"ipmix_dali/pg/{token}"
            time.sleep(0.02)
    raise RuntimeError(f"rank {rank}: rank 0 did not answer in the torchrun store "
                       f"({os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}) "
                       f"within {timeout}")


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
