"""Each compiled kernel (littlebaby/kernels) against its NumPy twin in littlebaby/nn, forward and backward.

The NumPy layers are the reference: the gradient checks and the PyTorch parity tests prove them. A kernel must
give the same numbers to rounding: 1e-12 of the largest value in float64, 1e-5 in float32 (a few float32
epsilons, since a kernel sums in a different order and computes e^x from its own polynomial). Then a whole
training step with the kernels must equal the NumPy step.
"""

import numpy as np
import pytest

from helpers import TEXT, TINY_FLAGS
from littlebaby import kernels
from littlebaby.cli import main
from littlebaby.model import GPT, Config
from littlebaby.nn import attention, gelu, layernorm
from littlebaby.nn.backend import COMPILED_TWINS
from littlebaby.optim import AdamW

numba = pytest.importorskip("numba", reason="the kernels need numba (pip install numba)")

TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
DTYPES = ["float64", "float32"]


def relative_error(mine, reference):
    mine, reference = np.asarray(mine, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(mine - reference))) / max(float(np.max(np.abs(reference))), 1e-30)


def assert_same(mine, reference, dtype, what):
    assert len(mine) == len(reference), what
    for i, (m, r) in enumerate(zip(mine, reference)):
        assert m.shape == r.shape and m.dtype == r.dtype, f"{what}[{i}]: {m.dtype} {m.shape} != {r.dtype} {r.shape}"
        error = relative_error(m, r)
        assert error < TOLERANCE[dtype], f"{what}[{i}]: relative error {error:.2e} >= {TOLERANCE[dtype]:g}"


def both_ways(function, dtype, expected):
    """function() run with the NumPy layers, then with the kernels: (numpy's result, the kernels' result).
    Each kernel named in ``expected`` must have run in the second call (a dispatch that never happens would
    compare NumPy with itself)."""
    with kernels.using("numpy"):
        reference = function()
    with kernels.using("numba", dtype):
        calls = {name: 0 for name in COMPILED_TWINS}
        for name, twin in COMPILED_TWINS.items():
            COMPILED_TWINS[name] = counted(twin, name, calls)
        mine = function()
    assert all(calls[name] > 0 for name in expected), f"kernels that never ran: {[n for n in expected if not calls[n]]}"
    return reference, mine


def counted(twin, name, calls):
    def call(*args, **kwargs):
        calls[name] += 1
        return twin(*args, **kwargs)
    return call


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_kernel_equals_numpy(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 5, 96)) * 4).astype(dtype)         # (B, T, F), tails far into saturation
    x[0, 0, :4] = [-40.0, -12.0, 12.0, 40.0]
    dout = rng.standard_normal(x.shape).astype(dtype)

    def run():
        out, cache = gelu.gelu_forward(x)
        return out, gelu.gelu_backward(dout, cache)

    reference, mine = both_ways(run, dtype, ["gelu_forward", "gelu_backward"])
    assert_same(mine, reference, dtype, "gelu")


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_kernel_equals_numpy(dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 7, 48)) * 3 + 1).astype(dtype)     # (B, T, C) off-centre rows
    w, b = rng.standard_normal(48).astype(dtype), rng.standard_normal(48).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)

    def run():
        out, cache = layernorm.layernorm_forward(x, w, b)
        return (out, *layernorm.layernorm_backward(dout, cache))

    reference, mine = both_ways(run, dtype, ["layernorm_forward", "layernorm_backward"])
    assert_same(mine, reference, dtype, "layernorm")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("T, S", [(5, 5), (70, 70), (3, 9)])        # one block, several blocks, a KV-cache step
def test_causal_attention_kernel_equals_numpy(dtype, p, T, S):
    """Both paths compute heads_forward's core: the NumPy one in blocks of queries where T allows."""
    rng = np.random.default_rng(2)
    B, NH, hs = 2, 3, 8
    q = rng.standard_normal((B, NH, T, hs)).astype(dtype)
    k = rng.standard_normal((B, NH, S, hs)).astype(dtype)
    v = rng.standard_normal((B, NH, S, hs)).astype(dtype)
    keep = rng.random((B, NH, T, S)) >= p if p else None
    dy = rng.standard_normal((B, NH, T, hs)).astype(dtype)

    def run():
        y = np.full((B, T, NH, hs), np.nan, dtype).transpose(0, 2, 1, 3)  # a strided view, as heads_forward gives
        _, cache = attention.causal_attention_forward(q, k, v, keep, p, y)
        grads = [np.full(a.shape, np.nan, dtype) for a in (q, k, v)]
        attention.causal_attention_backward(dy, cache, *grads)
        return (y.copy(), *grads)

    reference, mine = both_ways(run, dtype, ["causal_softmax_forward", "causal_softmax_backward"])
    assert_same(mine, reference, dtype, "attention")


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_kernel_equals_numpy(dtype):
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((6, 5)).astype(dtype), "b": rng.standard_normal(5).astype(dtype)}

    def run():
        ps = {name: p.copy() for name, p in params.items()}
        opt = AdamW(ps, lr=1e-2, weight_decay=0.1)
        for step in range(3):
            grads = {name: np.random.default_rng(step).standard_normal(p.shape).astype(dtype)
                     for name, p in ps.items()}
            opt.step(ps, grads)
        return ps["w"], ps["b"], opt.m["w"], opt.v["b"]

    reference, mine = both_ways(run, dtype, ["adamw_update"])
    assert_same(mine, reference, dtype, "adamw")


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_training_step_with_kernels_equals_numpy(dtype):
    """The whole model: loss and every gradient, with dropout (the same masks from the same seed)."""
    config = Config(vocab_size=11, n_ctx=40, n_emb=24, head_size=24, n_heads=3, n_layers=2, dropout=0.2,
                    dtype=dtype)
    rng = np.random.default_rng(4)
    idx, targets = rng.integers(0, 11, (3, 40)), rng.integers(0, 11, (3, 40))

    def run():
        gpt = GPT(config, seed=5)
        loss, grads = gpt.loss_and_grads(idx, targets)
        return (np.array(loss), *grads.values())

    reference, mine = both_ways(run, dtype, [name for name in kernels.twins() if name != "adamw_update"])
    assert_same(mine, reference, dtype, "model")


def test_kernels_leave_cupy_like_arrays_to_numpy():
    """Only plain NumPy arrays go to a kernel: a subclass (the fake GPU of test_device) gets the NumPy layer."""
    class Other(np.ndarray):
        pass

    x = np.ones((2, 3)).view(Other)
    with kernels.using("numba", "float64"):
        from littlebaby.nn.backend import compiled_twin
        assert compiled_twin("gelu_forward", x) is None
        assert compiled_twin("gelu_forward", np.ones(2)) is not None


def test_numba_asked_for_without_numba_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kernels, "numba_or_reason", lambda: (None, "numba could not be imported (test)"))
    with pytest.raises(kernels.BabyError, match="`kernels='numba'`: numba could not be imported"):
        kernels.resolve("numba")
    assert kernels.resolve("auto") == ("numpy", "numba kernels unavailable, using the NumPy layers: numba could "
                                                 "not be imported (test)")


# --- through the command: the choice, what a run says of it, and the fallbacks ---------------------------------

def train_tiny(tmp_path, capsys, *flags):
    (tmp_path / "tiny.txt").write_text(TEXT, encoding="utf-8")
    code = main(["train", "--data", str(tmp_path / "tiny.txt"), "--steps", "2", "--out", str(tmp_path / "out"),
                 "--completion-tokens", "0", *TINY_FLAGS, *flags])
    return code, capsys.readouterr().err


def test_a_run_says_once_how_it_runs(tmp_path, capsys):
    code, err = train_tiny(tmp_path, capsys, "--threads", "1")
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("training on")]
    assert lines == ["training on 1 core: 1 process x 1 BLAS thread, numba kernels"]
    assert kernels.in_use() == "numpy"    # the run leaves the process as it found it


def test_kernels_numba_without_numba_is_a_one_line_error_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(kernels, "numba_or_reason", lambda: (None, "numba could not be imported (No module)"))
    code, err = train_tiny(tmp_path, capsys, "--kernels", "numba")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --kernels numba: numba could not be imported") and "--kernels numpy" in err
    assert not (tmp_path / "out").exists()


def test_auto_falls_back_to_numpy_with_one_line_when_numba_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(kernels, "numba_or_reason", lambda: (None, "numba could not be imported (No module)"))
    code, err = train_tiny(tmp_path, capsys, "--threads", "1")
    assert code == 0 and "Traceback" not in err
    assert "training on 1 core: 1 process x 1 BLAS thread, numpy kernels (numba kernels unavailable, using the NumPy layers: " \
           "numba could not be imported (No module))" in err


def test_a_kernel_that_fails_to_compile_falls_back_or_is_an_error(tmp_path, capsys, monkeypatch):
    def broken(compiled, dtype):
        raise numba.core.errors.TypingError("no implementation for this CPU (test)")

    monkeypatch.setattr(kernels, "warm_up", broken)
    code, err = train_tiny(tmp_path, capsys, "--threads", "1")
    assert code == 0 and "numpy kernels (numba kernels failed to compile, using the NumPy layers (TypingError))" in err
    (tmp_path / "again").mkdir()
    code, err = train_tiny(tmp_path / "again", capsys, "--kernels", "numba")
    assert code == 2 and err.startswith("error: --kernels numba: a kernel failed to compile (TypingError")
    assert not (tmp_path / "again" / "out").exists()
