"""Worker for tests/test_dcp.py, run under ``python -m torch.distributed.run`` (CPU, gloo).

Every rank regenerates the same full tensors from a fixed seed (:func:`full_tensors`), so no
rank needs another's data to know what the checkpoint must hold.

Usage::

    python -m torch.distributed.run --nproc_per_node=N dcp_ranks.py save CKPT_DIR
    python -m torch.distributed.run --nproc_per_node=N dcp_ranks.py load CKPT_DIR OUT_FILE

``save``: each rank holds a ``Shard(0)`` (row) slice of every tensor as a DTensor on a 1-D
mesh of all ranks and writes its slice with ``torch.distributed.checkpoint.save``.
``load``: each rank loads its own ``Shard(0)`` slice on a mesh of this run's size (reading
``.metadata`` through paramscope's restricted reader), rank 0 gathers ``full_tensor()`` and
writes the full tensors to ``OUT_FILE`` (safetensors).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from paramscope.io._dcp import SafeFileSystemReader

SEED = 1234


def full_tensors() -> dict[str, torch.Tensor]:
    """The original full tensors, the same in every process (first dims not divisible by 3).

    Returns:
        name → tensor.
    """
    g = torch.Generator().manual_seed(SEED)
    return {
        "embed.weight": torch.randn(10, 6, generator=g),
        "layers.0.proj.weight": torch.randn(7, 5, generator=g).to(torch.bfloat16),
        "layers.0.proj.bias": torch.randn(7, generator=g, dtype=torch.float64),
        "counts": torch.randint(-(2**40), 2**40, (11, 2), generator=g, dtype=torch.int64),
    }


def main(argv: list[str]) -> int:
    """Run one rank.

    Args:
        argv: ``[mode, ckpt_dir]`` or ``[mode, ckpt_dir, out_file]``.

    Returns:
        The exit status.
    """
    mode, ckpt = argv[0], argv[1]
    dist.init_process_group("gloo")
    try:
        world = dist.get_world_size()
        mesh = init_device_mesh("cpu", (world,))
        full = full_tensors()
        if mode == "save":
            state = {k: distribute_tensor(v, mesh, [Shard(0)]) for k, v in full.items()}
            dcp.save(state, checkpoint_id=ckpt)
        elif mode == "load":
            state = {
                k: distribute_tensor(torch.zeros_like(v), mesh, [Shard(0)]) for k, v in full.items()
            }
            dcp.load(state, storage_reader=SafeFileSystemReader(ckpt))
            gathered = {}
            for k, v in state.items():
                assert isinstance(v, DTensor)
                gathered[k] = v.full_tensor()
            if dist.get_rank() == 0:
                save_file(gathered, argv[2])
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    sys.exit(main(sys.argv[1:]))
