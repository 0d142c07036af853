"""Fixtures shared by the paper tests in this folder."""

import pytest


@pytest.fixture(scope="session")
def tiny_policy():
    """An untrained one-layer policy of the reasoning substrate (seed 0): plumbing tests only."""
    from shared import reasoning, zoo

    spec = zoo.ModelSpec(attention="gqa", vocab_size=reasoning.VOCAB_SIZE, d_model=32, n_layers=1, n_heads=4,
                         n_kv_heads=2, d_ff=64, max_seq_len=96)
    return reasoning.as_policy(zoo.build(spec, seed=0), spec)
