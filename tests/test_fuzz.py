"""Random CNN graphs against the numpy reference (issue 12 point 6): target c at opt 0 and 2, and
the CUDA source through cuda-emu.

Each hypothesis example is a batch of ``GRAPHS_PER_MODULE`` random graphs compiled as ONE module
per configuration (a gcc call per graph would not fit CI). The default profile runs
``CI_BATCHES`` batches (200 graphs, fixed seed); ``--hypothesis-profile=long`` (tests/conftest.py)
runs its ``max_examples`` graphs (5,000) with fresh randomness. A failing batch is re-checked one
graph per module, so the error names the single offending spec with its code; shrunk failures
become the explicit regression tests below."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_graphs import Spec, check_specs, specs

pytestmark = pytest.mark.usefixtures("shared_kernel_cache")

GRAPHS_PER_MODULE = 8    # more overruns hypothesis' 8 KiB choice buffer
CI_BATCHES = 25
LONG = settings.default.max_examples > 100          # a profile asking for more than the default
BATCHES = max(CI_BATCHES, settings.default.max_examples // GRAPHS_PER_MODULE) if LONG else CI_BATCHES


@settings(max_examples=BATCHES, deadline=None, derandomize=not LONG, database=None if not LONG else settings.default.database,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(st.lists(specs(hostile_names=False), min_size=GRAPHS_PER_MODULE, max_size=GRAPHS_PER_MODULE))
def test_random_graphs_match_the_reference(spec_list):
    check_specs(spec_list)
