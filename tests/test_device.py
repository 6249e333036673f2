"""The array-module switch behind ``--device cpu|cuda``, proven on the CPU.

Two things are shown here. With NumPy (every other test file) the switch is the identity: ``array_module`` is
NumPy and nothing changes. With ``tests/fake_gpu.py`` standing in for CuPy, the same layers, model, optimizer,
generation and training loop run on "device arrays" that NumPy's own functions refuse, and give NumPy's
numbers: so no path reaches for ``np.`` where it must ask the array module, and every host/device crossing is
explicit. What this cannot show (a real GPU's kernels and rounding) is measured on a GPU machine when one is
lent: see docs/PERFORMANCE.md.
"""

import sys

import numpy as np
import pytest

import fake_gpu
import littlebaby.api as api
from helpers import (COMBINATIONS, ORIGINAL_VARIANTS, SHAPE, TEXT, TINY_RUN, check_model_on_device,
                     interrupt_at, variant_id)
from littlebaby import checkpoint, cli, device
from littlebaby.errors import BabyError
from littlebaby.sampling import sample_ids
from littlebaby.model import GPT, Config
from littlebaby.nn import attention
from littlebaby.nn.backend import array_module, to_host
from littlebaby.optim import AdamW, clip_grad_norm
from littlebaby.runs import RunPaths

TINY = dict(TINY_RUN, completion_tokens=20)


@pytest.fixture
def fake(monkeypatch):
    return fake_gpu.install(monkeypatch)


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)   # `import cupy` now raises ImportError, as when absent


def test_without_cupy_the_module_is_numpy(no_cupy):
    x = np.ones(3)
    assert array_module(x) is np and to_host(x) is x
    assert device.array_module_for("cpu") is np


def test_the_fake_device_refuses_numpy_functions_as_cupy_does(fake):
    """The check below is only worth something if a forgotten switch fails: it does."""
    x = fake.asarray(np.ones((2, 3)))
    assert array_module(x) is fake and array_module(np.ones(2)) is np
    with pytest.raises(TypeError, match="xp.einsum"):
        np.einsum("ij->i", x)
    with pytest.raises(TypeError, match="xp.concatenate"):
        np.concatenate([x, x])
    assert isinstance(fake.einsum("ij->i", x), fake_gpu.DeviceArray)
    assert isinstance(x @ x.T + 1, fake_gpu.DeviceArray)      # operators keep the device, as on CuPy
    assert type(to_host(x)) is np.ndarray


@pytest.mark.parametrize("variant", COMBINATIONS + ORIGINAL_VARIANTS, ids=variant_id)
def test_the_model_on_the_device_computes_what_numpy_computes(fake, variant):
    """Every combination of switches. The fake device computes with NumPy itself, so only the embedding
    gradient's summation order (CuPy has no ``reduceat``; the scatter-add twin runs) can differ."""
    check_model_on_device(fake, fake_gpu.DeviceArray, variant, rtol=1e-12, atol=1e-15)


def test_attention_in_query_blocks_runs_on_the_device(fake):
    """The models above are too short for causal query blocks (T >= 64); the heads alone at T = 64 use two."""
    rng = np.random.default_rng(6)
    x, w_qkv, b_qkv = rng.standard_normal((2, 64, 8)), rng.standard_normal((8, 24)), rng.standard_normal(24)
    assert len(attention.query_blocks(64, 64)) == 2
    y, cache = attention.heads_forward(x, w_qkv, b_qkv, 2, 0.1, np.random.default_rng(1))
    grads = attention.heads_backward(y, cache)
    device_y, device_cache = attention.heads_forward(*map(fake.asarray, (x, w_qkv, b_qkv)), 2, 0.1,
                                                     np.random.default_rng(1))
    device_grads = attention.heads_backward(device_y, device_cache)
    for mine, reference in zip((device_y, *device_grads), (y, *grads)):
        assert isinstance(mine, fake_gpu.DeviceArray)
        np.testing.assert_allclose(to_host(mine), reference, rtol=1e-12, atol=1e-15)


def test_adamw_and_clipping_run_on_the_device(fake):
    config = Config(**SHAPE, dtype="float64")
    host, on_device = GPT(config, seed=1), GPT(config, seed=1).move_to(fake)
    rng = np.random.default_rng(2)
    grads = {name: rng.standard_normal(p.shape) for name, p in host.params.items()}
    device_grads = {name: fake.asarray(g) for name, g in grads.items()}
    host_opt, device_opt = AdamW(host.params), AdamW(on_device.params)
    for _ in range(3):
        assert clip_grad_norm(device_grads, 1.0) == pytest.approx(clip_grad_norm(grads, 1.0), rel=1e-12)
        host_opt.step(host.params, grads)
        device_opt.step(on_device.params, device_grads)
    for name, p in host.params.items():
        assert isinstance(on_device.params[name], fake_gpu.DeviceArray)
        np.testing.assert_allclose(to_host(on_device.params[name]), p, rtol=1e-12, atol=1e-15, err_msg=name)
    device_opt.load_state_dict(host_opt.state_dict())   # a checkpoint's host arrays go back to the device
    assert isinstance(device_opt.m["wte"], fake_gpu.DeviceArray)


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_on_the_device_samples_the_same_tokens(fake, use_cache):
    config = Config(**SHAPE, dtype="float64")
    host, on_device = GPT(config, seed=4), GPT(config, seed=4).move_to(fake)

    def sample(gpt):   # 20 tokens, past n_ctx = 8, so the window restarts on the way
        return np.array(list(sample_ids(gpt, [1, 2], 20, rng=np.random.default_rng(5), use_cache=use_cache,
                                        num_samples=2)))

    np.testing.assert_array_equal(sample(on_device), sample(host))


def test_a_run_trains_saves_and_generates_on_the_device(fake, tmp_path):
    """`baby train --device cuda` end to end: artifacts on the host side, the report names the device, and the
    losses are the CPU run's up to float32 rounding (the embedding gradient sums in another order on a GPU)."""
    data = tmp_path / "tiny.txt"
    data.write_text(TEXT, encoding="utf-8")
    # one process on the host too: a GPU run is one process, and more workers draw other dropout masks
    cpu = api.train(data=data, out=tmp_path / "cpu", steps=12, quiet=True, threads=1, **TINY)
    gpu = api.train(data=data, out=tmp_path / "gpu", steps=12, quiet=True, device="cuda", **TINY)
    assert fake.calls["einsum"] > 0 and fake.calls["add"] > 0    # the layers did ask the device's module
    cpu_report, gpu_report = cpu.report, gpu.report
    assert gpu_report["environment"]["device"] == "cuda:0 fake GPU"
    assert cpu_report["environment"]["device"] == "cpu"
    np.testing.assert_allclose(gpu_report["loss"], cpu_report["loss"], rtol=1e-4)
    params, _ = checkpoint.load_model(RunPaths(tmp_path / "gpu", gpu.guid).model)
    assert all(type(a) is np.ndarray for a in params.values())
    text = api.generate(gpu.guid, prompt="ANNE:", max_tokens=30, seed=1, out=tmp_path / "gpu",
                        device_name="cuda").text
    assert text == api.generate(gpu.guid, prompt="ANNE:", max_tokens=30, seed=1, out=tmp_path / "gpu").text


def test_a_run_started_on_the_device_resumes_on_the_cpu(fake, tmp_path):
    data = tmp_path / "tiny.txt"
    data.write_text(TEXT, encoding="utf-8")
    part = api.train(data=data, out=tmp_path, steps=10, quiet=True, device="cuda", on_step=interrupt_at(4), **TINY)
    assert part.report["status"] == "interrupted"
    with pytest.raises(BabyError, match="only `device`, `threads`, `kernels` may change"):
        api.train(resume=part.guid, out=tmp_path, quiet=True, steps=20)
    resumed = api.train(resume=part.guid, out=tmp_path, quiet=True, device="cpu")
    assert resumed.report["steps"] == 10 and resumed.report["environment"]["device"] == "cpu"
    assert resumed.record.training["device"] == "cuda"     # the record keeps how the run was started


@pytest.mark.parametrize("variable", ["MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK"])
def test_each_mpi_rank_of_a_machine_takes_its_own_gpu(fake, monkeypatch, variable):
    fake.gpus = 2
    for rank, gpu in ((0, 0), (1, 1), (2, 0), (3, 1)):
        monkeypatch.setenv(variable, str(rank))
        device.array_module_for("cuda")
        assert fake.current_gpu == gpu
    assert device.describe(fake) == "cuda:1 fake GPU"


def test_cuda_without_cupy_is_one_clear_line(no_cupy, tmp_path, capsys):
    with pytest.raises(BabyError, match=r"needs CuPy.*\.\[cuda\]"):
        device.array_module_for("cuda")
    code = cli.main(["train", "--device", "cuda", "--steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --device cuda needs CuPy") and "Traceback" not in err
    assert not (tmp_path / "configs").exists()      # refused before any work or file
