"""One real search shared by the tests that only read a finished search's output; one torch thread."""

import pytest
import torch

# First, before any test module imports Ray: ticketsearch/search/__init__.py sets the environment Ray
# reads when it loads (under `uv run`, Ray would otherwise copy this checkout, .venv included, into
# every embedded session).
from ticketsearch.search.driver import run_search
from ticketsearch.spec import load_spec

from search_helpers import search_spec

# The tests' models are tiny (8x8 digits): a second intra-op thread buys nothing, and when the machine
# is busy (Ray trial workers of a search test, other jobs) two spinning OpenMP threads per process
# made epochs up to 100x slower here (0.06 s against 6 s for the same tiny epoch).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def finished_search(tmp_path_factory):
    """A tiny ASHA search (4 trials on digits, embedded Ray with 2 CPUs): (spec path, output directory)."""
    base = tmp_path_factory.mktemp("finished-search")
    spec_path = search_spec(base)
    out = base / "out"
    run_search(load_spec(spec_path), out=out, num_cpus=2, verbose=0, echo=lambda line: None)
    return spec_path, out
