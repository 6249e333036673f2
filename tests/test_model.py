"""The whole model: gradients against finite differences, config checks, counts, causality, learning."""

import dataclasses
import json

import numpy as np
import pytest

from gradcheck import TOLERANCE, grad_error
from littlebaby.errors import BabyError, ConfigError
from littlebaby.model import GPT, Config, flops_per_token, num_params, param_shapes

TINY = dict(vocab_size=11, n_ctx=8, n_emb=12, head_size=16, n_heads=4, n_layers=2, batch_size=3)


def nontrivial_gpt(dtype="float64", dropout=0.0, seed=0, **overrides):
    """A model whose every parameter is random: zero biases and unit gains would hide backward bugs."""
    gpt = GPT(Config(**{**TINY, **overrides}, dropout=dropout, dtype=dtype), seed=seed)
    rng = np.random.default_rng(seed + 100)
    for name, p in gpt.params.items():
        p += (rng.standard_normal(p.shape) * (0.3 if p.ndim == 1 else 0.1)).astype(p.dtype)
    return gpt


def batch(gpt, rng, T=None):
    T = T or gpt.config.n_ctx
    shape = (gpt.config.batch_size, T)
    return rng.integers(0, gpt.config.vocab_size, shape), rng.integers(0, gpt.config.vocab_size, shape)


@pytest.mark.parametrize("dropout", [0.0, 0.15])
def test_whole_model_gradients_match_finite_differences(dropout):
    gpt = nontrivial_gpt(dropout=dropout)
    rng = np.random.default_rng(5)
    idx, targets = batch(gpt, rng, T=6)
    loss, grads = gpt.loss_and_grads(idx, targets, rng=np.random.default_rng(9))

    def f():  # the same dropout masks at every evaluation
        return gpt.loss_and_grads(idx, targets, rng=np.random.default_rng(9))[0]

    errors = {name: grad_error(f, gpt.params[name], grads[name], rng, n_probes=6) for name in gpt.params}
    assert max(errors.values()) < TOLERANCE, {k: v for k, v in errors.items() if v >= TOLERANCE}


def test_grads_mirror_params():
    gpt = nontrivial_gpt(dtype="float32")
    _, grads = gpt.loss_and_grads(*batch(gpt, np.random.default_rng(0)))
    assert list(grads) == list(gpt.params)
    for name, p in gpt.params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == np.float32, name


def test_param_count_formula_matches_the_arrays():
    for overrides in [{}, dict(head_size=24, n_heads=3), dict(n_layers=3, vocab_size=100)]:
        gpt = GPT(Config(**{**TINY, **overrides}))
        assert gpt.num_params() == sum(p.size for p in gpt.params.values())
    assert num_params(Config()) == 818_241  # the default config, counted by hand once


def test_flops_per_token_counts_every_matmul():
    cfg = Config(**TINY)
    V, C, H, L, T = cfg.vocab_size, cfg.n_emb, cfg.head_size, cfg.n_layers, cfg.n_ctx
    matmul_weights = sum(np.prod(s) for n, s in param_shapes(cfg).items()
                         if len(s) == 2 and n not in ("wte", "wpe"))
    assert matmul_weights == L * (3 * C * H + H * C + 8 * C * C) + C * V
    assert flops_per_token(cfg) == 6 * matmul_weights + 12 * L * T * H


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
    gpt = GPT(Config(**TINY, dropout=0.0, lr=1e-2), seed=3)
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
    gpt = GPT(Config(**TINY, dropout=0.1), seed=seed)
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
    gpt = GPT(Config(**TINY))
    idx, targets = batch(gpt, np.random.default_rng(0))
    assert gpt.forward(idx).dtype == np.float32
    assert all(p.dtype == np.float32 for p in gpt.params.values())


def test_config_round_trips_through_json():
    cfg = Config(**TINY, dropout=0.2, lr=3e-4, dtype="float64")
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
    gpt = GPT(Config(**TINY))
    params = dict(gpt.params)
    GPT.from_params(gpt.config, params)
    with pytest.raises(BabyError, match="'wte' should be float32"):
        GPT.from_params(gpt.config, {**params, "wte": params["wte"][:, :5]})
    with pytest.raises(BabyError, match="missing"):
        GPT.from_params(gpt.config, {k: v for k, v in params.items() if k != "ln_f.b"})


def test_bad_token_ids_are_refused():
    gpt = GPT(Config(**TINY))
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
    gpt = nontrivial_gpt(dtype="float64", n_emb=10, head_size=6, n_heads=2)
    assert gpt.params["blocks.0.attn.w_qkv"].shape == (10, 18)
    assert dataclasses.replace(gpt.config).head_size == 6
    loss, grads = gpt.loss_and_grads(*batch(gpt, np.random.default_rng(0)))
    assert np.isfinite(loss) and grads["blocks.1.attn.w_proj"].shape == (6, 10)


def test_the_core_imports_numpy_and_nothing_else():
    """The promise to learners: the core's source imports NumPy, the standard library and other core modules."""
    import ast
    import pathlib
    import sys
    package = pathlib.Path(__file__).parent.parent / "littlebaby"
    core = [*package.glob("nn/*.py"), package / "model.py", package / "optim.py", package / "kvcache.py",
            package / "decode.py", package / "config.py", package / "errors.py"]
    allowed = {"numpy", "littlebaby.nn", "littlebaby.model", "littlebaby.config", "littlebaby.errors"}
    for path in core:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for name in names:
                    ok = name.split(".")[0] in sys.stdlib_module_names or name == "littlebaby" or any(
                        name == a or name.startswith(a + ".") for a in allowed)
                    assert ok, f"{path.name} imports {name}"
