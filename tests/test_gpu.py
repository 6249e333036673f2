"""The model on a real GPU (CuPy) against NumPy. Runs where CuPy and a CUDA GPU are present, skips elsewhere
(``tests/test_device.py`` proves the same switch on the CPU with a stand-in for CuPy)."""

import numpy as np
import pytest

from helpers import COMBINATIONS, ORIGINAL_VARIANTS, SHAPE, check_model_on_device, variant_id
from littlebaby import device
from littlebaby.errors import BabyError
from littlebaby.sampling import sample_ids
from littlebaby.model import GPT, Config
from littlebaby.nn.backend import to_host
from littlebaby.optim import AdamW


@pytest.fixture(scope="module")
def cupy():
    pytest.importorskip("cupy")
    try:
        return device.array_module_for("cuda")
    except BabyError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("variant", COMBINATIONS + ORIGINAL_VARIANTS, ids=variant_id)
def test_gradients_on_the_gpu_match_numpy(cupy, variant):
    """float64: the GPU sums in another order, so agreement is to rounding (1e-10), not bit for bit."""
    check_model_on_device(cupy, cupy.ndarray, variant, rtol=1e-10, atol=1e-13)


def test_float32_training_steps_on_the_gpu_track_numpy(cupy):
    config = Config(**SHAPE, dropout=0.1)
    host, gpu = GPT(config, seed=1), GPT(config, seed=1).move_to(cupy)
    host_opt, gpu_opt = AdamW(host.params), AdamW(gpu.params)
    rng = np.random.default_rng(2)
    for _ in range(5):
        idx, targets = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))
        loss, grads = host.loss_and_grads(idx, targets)
        gpu_loss, gpu_grads = gpu.loss_and_grads(idx, targets)
        assert gpu_loss == pytest.approx(loss, rel=1e-5)
        host_opt.step(host.params, grads)
        gpu_opt.step(gpu.params, gpu_grads)
    for name, p in host.params.items():
        np.testing.assert_allclose(to_host(gpu.params[name]), p, rtol=1e-4, atol=1e-6, err_msg=name)


def test_cached_generation_on_the_gpu(cupy):
    config = Config(**SHAPE, dtype="float64")
    host, gpu = GPT(config, seed=4), GPT(config, seed=4).move_to(cupy)

    def sample(gpt):
        return np.array(list(sample_ids(gpt, [1, 2], 20, rng=np.random.default_rng(5), num_samples=2)))

    np.testing.assert_array_equal(sample(gpu), sample(host))
