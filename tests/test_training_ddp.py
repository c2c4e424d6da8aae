"""Two CPU processes with DistributedDataParallel (gloo), as torchrun would start them."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rave.network import load_checkpoint_file


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, root: str, port: int) -> None:
    # the environment torchrun sets for each process
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    from rave.training.loop import train
    from test_training import tiny_config, tiny_factory

    # Each rank is given its own output_dir so that a write by rank 1 would be visible.
    config = tiny_config(Path(root), iterations=5, output_dir=str(Path(root) / f"run{rank}"))
    result = train(config, encoder_factory=tiny_factory)
    torch.save(result.model.state_dict(), Path(root) / f"weights_rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path: Path) -> None:
    from test_training import make_folders, read_metrics

    make_folders(tmp_path)
    mp.spawn(_worker, args=(2, str(tmp_path), _free_port()), nprocs=2, join=True)

    w0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    checkpoint = load_checkpoint_file(tmp_path / "run0" / "last.pt")
    assert checkpoint["iteration"] == 5
    for key in w0:
        assert torch.equal(checkpoint["model"][key], w0[key]), key
    # the weights moved from their initialisation (5 steps happened)
    torch.manual_seed(0)
    from rave.network import EnhancementNet

    init = EnhancementNet(padding_mode="zeros").state_dict()
    assert not torch.equal(init["cond1.weight"], w0["cond1.weight"])

    # only rank 0 wrote files
    assert not (tmp_path / "run1").exists()
    assert [int(r["iteration"]) for r in read_metrics(tmp_path / "run0")] == list(range(5))
