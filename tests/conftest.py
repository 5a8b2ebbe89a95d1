import numpy as np
import pytest

import fastpg


@pytest.fixture(scope="session")
def tiny_result(tmp_path_factory):
    """The tiny preset, run once per session (also compiles every kernel)."""
    out = tmp_path_factory.mktemp("tiny") / "tiny.h5"
    return fastpg.run(dict(fastpg.PRESETS["tiny"]), out)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def random_W(rng, features, N, k, d, scale=1.0):
    blocks = N if features == 0 else N * (k + 1)
    return scale * rng.standard_normal((blocks, k, d))


def random_x(rng, d):
    x = rng.standard_normal(d)
    return x / np.linalg.norm(x)


def new_state(seed):
    from fastpg.kernels.rng import seed_sequence, xoshiro_state

    return xoshiro_state(seed_sequence(seed, "test", {}))
