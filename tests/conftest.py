"""One real search shared by the tests that only read a finished search's output."""

import pytest

from ticketsearch.search.driver import run_search
from ticketsearch.spec import load_spec

from search_helpers import search_spec


@pytest.fixture(scope="session")
def finished_search(tmp_path_factory):
    """A tiny ASHA search (4 trials on digits, embedded Ray with 2 CPUs): (spec path, output directory)."""
    base = tmp_path_factory.mktemp("finished-search")
    spec_path = search_spec(base)
    out = base / "out"
    run_search(load_spec(spec_path), out=out, num_cpus=2, verbose=0, echo=lambda line: None)
    return spec_path, out
