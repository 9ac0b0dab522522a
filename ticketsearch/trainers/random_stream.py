"""A trial's own torch random stream, swapped in around each unit of work.

Several trainers may run in one process (Ray reuses workers, tests interleave them); each keeps the
global torch generator's state (and the CUDA one on a GPU) of its own trial, so its records do not
depend on what ran before it, and the caller's random state is left as it was.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch


class RandomStream:
    def __init__(self, seed: int, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device] if self.cuda else []):
            torch.manual_seed(seed)
            self.cpu_state = torch.get_rng_state()
            self.cuda_state = torch.cuda.get_rng_state(device) if self.cuda else None

    @contextmanager
    def active(self) -> Iterator[None]:
        outside = torch.get_rng_state()
        torch.set_rng_state(self.cpu_state)
        if self.cuda:
            outside_cuda = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(self.cuda_state, self.device)
        try:
            yield
        finally:
            self.cpu_state = torch.get_rng_state()
            torch.set_rng_state(outside)
            if self.cuda:
                self.cuda_state = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(outside_cuda, self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"torch": self.cpu_state, **({"cuda": self.cuda_state} if self.cuda else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cpu_state = state["torch"]
        if self.cuda and "cuda" in state:
            self.cuda_state = state["cuda"]
