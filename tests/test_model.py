"""The whole model: gradients against finite differences, config checks, counts, causality, learning."""

import json
import subprocess
import sys

import numpy as np
import pytest

from gradcheck import TOLERANCE, model_grad_errors
from helpers import SHAPE, nontrivial_gpt
from littlebaby.errors import BabyError, ConfigError
from littlebaby.model import GPT, Config, flops_per_token, num_params, param_shapes


def batch(gpt, rng, T=None):
    T = T or gpt.config.n_ctx
    shape = (gpt.config.batch_size, T)
    return rng.integers(0, gpt.config.vocab_size, shape), rng.integers(0, gpt.config.vocab_size, shape)


@pytest.mark.parametrize("dropout", [0.0, 0.15])
def test_whole_model_gradients_match_finite_differences(dropout):
    gpt = nontrivial_gpt(dropout=dropout)
    idx, targets = batch(gpt, np.random.default_rng(5), T=6)
    errors = model_grad_errors(gpt, idx, targets, dropout_seed=9, n_probes=6)
    assert max(errors.values()) < TOLERANCE, {k: v for k, v in errors.items() if v >= TOLERANCE}


def test_grads_mirror_params():
    gpt = nontrivial_gpt(dtype="float32")
    _, grads = gpt.loss_and_grads(*batch(gpt, np.random.default_rng(0)))
    assert list(grads) == list(gpt.params)
    for name, p in gpt.params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == np.float32, name


def test_param_count_formula_matches_the_arrays():
    for overrides in [{}, dict(head_size=24, n_heads=3), dict(n_layers=3, vocab_size=100),
                      dict(weight_tying=True, lm_head_bias=False), dict(lm_head_bias=False)]:
        gpt = GPT(Config(**{**SHAPE, **overrides}))
        assert gpt.num_params() == sum(p.size for p in gpt.params.values())
    assert num_params(Config()) == 818_241  # the default config, counted by hand once
    # GPT-2 124M (tied head without bias): the 124,439,808 parameters of the published checkpoint
    gpt2 = Config(vocab_size=50257, n_ctx=1024, n_emb=768, head_size=768, n_heads=12, n_layers=12,
                  weight_tying=True, lm_head_bias=False)
    assert num_params(gpt2) == 124_439_808


def test_flops_per_token_counts_every_matmul():
    cfg = Config(**SHAPE)
    V, C, H, L, T = cfg.vocab_size, cfg.n_emb, cfg.head_size, cfg.n_layers, cfg.n_ctx
    matmul_weights = sum(np.prod(s) for n, s in param_shapes(cfg).items()
                         if len(s) == 2 and n not in ("wte", "wpe"))
    assert matmul_weights == L * (3 * C * H + H * C + 8 * C * C) + C * V
    assert flops_per_token(cfg) == 6 * matmul_weights + 12 * L * T * H
    # a tied head still multiplies by a (C, V) matrix, and a bias add is element-wise: neither changes the count
    gpt2_head = Config(**SHAPE, weight_tying=True, lm_head_bias=False)
    assert flops_per_token(gpt2_head) == flops_per_token(cfg)


def test_causality_future_tokens_never_change_the_past():
    gpt = nontrivial_gpt(dtype="float64")
    rng = np.random.default_rng(1)
    idx, _ = batch(gpt, rng)
    logits = gpt.forward(idx)
    for t in range(gpt.config.n_ctx - 1):
        changed = idx.copy()
        changed[:, t + 1:] = rng.integers(0, gpt.config.vocab_size, changed[:, t + 1:].shape)
        changed[:, -1] = (idx[:, -1] + 1) % gpt.config.vocab_size  # certainly different
        new_logits = gpt.forward(changed)
        np.testing.assert_array_equal(new_logits[:, :t + 1], logits[:, :t + 1])
        assert not np.allclose(new_logits[:, -1], logits[:, -1])


def test_overfits_one_small_batch():
    from littlebaby.optim import AdamW
    gpt = GPT(Config(**SHAPE, dropout=0.0, lr=1e-2), seed=3)
    idx, targets = batch(gpt, np.random.default_rng(0))
    opt = AdamW(gpt.params, lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(150):
        loss, grads = gpt.loss_and_grads(idx, targets)
        first = loss if first is None else first
        opt.step(gpt.params, grads)
    assert first > 2.0 and loss < 0.05, (first, loss)


def train_steps(seed, steps=5):
    from littlebaby.optim import AdamW
    gpt = GPT(Config(**SHAPE, dropout=0.1), seed=seed)
    opt = AdamW(gpt.params)
    data_rng = np.random.default_rng(seed)
    for _ in range(steps):
        loss, grads = gpt.loss_and_grads(*batch(gpt, data_rng))
        opt.step(gpt.params, grads)
    return gpt.params


def test_same_seed_gives_bitwise_identical_parameters():
    a, b, c = train_steps(seed=4), train_steps(seed=4), train_steps(seed=5)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert not all(np.array_equal(a[n], c[n]) for n in a)


def test_dropout_changes_training_but_not_evaluation():
    gpt = nontrivial_gpt(dtype="float32", dropout=0.5)
    idx, targets = batch(gpt, np.random.default_rng(0))
    assert gpt.loss(idx, targets) == gpt.loss(idx, targets)
    assert gpt.loss_and_grads(idx, targets)[0] != gpt.loss_and_grads(idx, targets)[0]


def test_float32_model_stays_float32():
    gpt = GPT(Config(**SHAPE))
    idx, targets = batch(gpt, np.random.default_rng(0))
    assert gpt.forward(idx).dtype == np.float32
    assert all(p.dtype == np.float32 for p in gpt.params.values())


def test_config_round_trips_through_json():
    cfg = Config(**SHAPE, dropout=0.2, lr=3e-4, dtype="float64")
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("data, message", [
    ({"n_embd": 64}, "unknown key 'n_embd'"),
    ({"n_ctx": "64"}, "'n_ctx' must be of type int"),
    ({"n_ctx": 6.0}, "'n_ctx' must be of type int"),
    ({"dropout": True}, "'dropout' must be of type float"),
    ({"dtype": "float16"}, "'dtype' must be of type 'float32' | 'float64'"),
    ({"head_size": 10, "n_heads": 4}, "head_size (10) must be divisible by n_heads (4)"),
    ({"n_layers": 0}, "'n_layers' must be a positive integer"),
    ({"dropout": 1.0}, "'dropout' must be in [0, 1)"),
    ({"lr": 0}, "'lr' must be a positive number"),
])
def test_config_refuses_bad_keys_with_a_message_naming_them(data, message):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(data)
    assert message in str(err.value)


def test_config_refuses_bad_values_when_built_directly():
    with pytest.raises(ConfigError, match="divisible"):
        Config(head_size=30, n_heads=4)


def test_from_params_checks_shapes_and_dtypes():
    gpt = GPT(Config(**SHAPE))
    params = dict(gpt.params)
    GPT.from_params(gpt.config, params)
    with pytest.raises(BabyError, match="'wte' should be float32"):
        GPT.from_params(gpt.config, {**params, "wte": params["wte"][:, :5]})
    with pytest.raises(BabyError, match="missing"):
        GPT.from_params(gpt.config, {k: v for k, v in params.items() if k != "ln_f.b"})


def test_bad_token_ids_are_refused():
    gpt = GPT(Config(**SHAPE))
    with pytest.raises(BabyError, match="outside"):
        gpt.forward(np.array([[0, 11]]))
    with pytest.raises(BabyError, match="n_ctx"):
        gpt.forward(np.zeros((1, 9), dtype=int))


def test_grow_vocab_keeps_old_tokens_meaning():
    gpt = nontrivial_gpt(dtype="float64")
    idx, _ = batch(gpt, np.random.default_rng(0))
    before = gpt.forward(idx)
    gpt.grow_vocab(14, np.random.default_rng(0))
    assert gpt.config.vocab_size == 14 and gpt.params["wte"].shape == (14, 12)
    after = gpt.forward(idx)
    np.testing.assert_array_equal(after[..., :11], before)  # old logits unchanged; new ones appended
    assert gpt.num_params() == sum(p.size for p in gpt.params.values())


def test_head_size_may_differ_from_n_emb():
    """Q, K, V are 6 wide (2 heads of 3) in a 10-wide stream: the projections change shape and the gradients
    still match finite differences."""
    gpt = nontrivial_gpt(dtype="float64", n_emb=10, head_size=6, n_heads=2)
    assert gpt.params["blocks.0.attn.w_qkv"].shape == (10, 18) and gpt.params["blocks.1.attn.w_proj"].shape == (6, 10)
    idx, targets = batch(gpt, np.random.default_rng(0))
    errors = model_grad_errors(gpt, idx, targets, dropout_seed=9, n_probes=4)
    assert max(errors.values()) < TOLERANCE, {k: v for k, v in errors.items() if v >= TOLERANCE}


ONLY_NUMPY = r"""
import importlib.abc, json, sys

INSTALLED = set(sys.stdlib_module_names) | {"numpy", "littlebaby"}


class OnlyNumPy(importlib.abc.MetaPathFinder):   # as if nothing but NumPy were installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in INSTALLED:
            raise ImportError(f"{name} is not installed here")


sys.meta_path.insert(0, OnlyNumPy())
before = set(sys.modules)
import littlebaby.model, littlebaby.nn, littlebaby.optim, littlebaby.kvcache, littlebaby.decode
from littlebaby.model import GPT, Config
from littlebaby.optim import AdamW
gpt = GPT(Config(vocab_size=11, n_ctx=8, n_emb=16, head_size=16, n_heads=2, n_layers=1, batch_size=2))
idx = [[1, 2, 3, 4, 5, 6, 7, 8]] * 2
loss, grads = gpt.loss_and_grads(idx, idx)
AdamW(gpt.params).step(gpt.params, grads)
loaded = sorted(set(sys.modules) - before)
try:
    littlebaby.train
    workflow = "loaded"
except ImportError as e:
    workflow = str(e)
print(json.dumps({"loaded": loaded, "workflow": workflow}))
"""
CORE = {"littlebaby", "littlebaby.config", "littlebaby.errors", "littlebaby.seeds", "littlebaby.model",
        "littlebaby.optim", "littlebaby.kernels", "littlebaby.kvcache", "littlebaby.decode"}   # and littlebaby.nn.*


def test_the_core_imports_with_only_numpy_installed():
    """The promise to learners, tested by importing for real in a Python where every package but NumPy is
    hidden: the model trains a step, only core modules and NumPy get loaded, and the workflow names (which need
    safetensors, tqdm, matplotlib) fail only when asked for, so the hiding works."""
    result = subprocess.run([sys.executable, "-c", ONLY_NUMPY], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    ours = [m for m in report["loaded"] if m.split(".")[0] == "littlebaby"]
    assert "littlebaby.model" in ours and "littlebaby.nn.attention" in ours
    assert [m for m in ours if m not in CORE and not m.startswith("littlebaby.nn.") and m != "littlebaby.nn"] == []
    others = {m.split(".")[0] for m in report["loaded"]} - {"littlebaby"}
    others = {m for m in others if m != "cython_runtime" and not m.startswith("_cython_")}  # numpy.random's own
    assert others <= set(sys.stdlib_module_names) | {"numpy"}, others - set(sys.stdlib_module_names)
    assert "not installed here" in report["workflow"]
