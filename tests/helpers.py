"""What the test files share: the tiny corpus, the tiny run, the model shape of the checks, the switch
combinations, a model with non-trivial parameters, and the one relative error of the comparisons.

Test files import from here and from gradcheck.py, never from each other.
"""

import itertools
import os
import signal

import numpy as np
import pytest

from littlebaby.model import GPT, Config

# A corpus of 40 short speeches: enough for a 90/10 split with n_ctx 8, small enough to train on in a blink.
TEXT = "".join(f"ANNE:\nI have {n} roses, and you have none.\n\nBEN:\nThen give me one.\n\n" for n in range(40))

# The tiny run's model, as keyword options of littlebaby.train; TINY_FLAGS is the same as `baby train` flags.
# Its quality sample is 300 tokens, not 5,000: the suite finishes many runs and reads no figure that needs more.
TINY_RUN = dict(n_ctx=8, n_emb=16, head_size=16, n_heads=2, n_layers=1, batch_size=4, lr=0.01, quality_tokens=300)


def flags(options: dict) -> list[str]:
    """Keyword options as flags of `baby train`: {"n_ctx": 8, "weight_tying": True} -> ["--n-ctx", "8",
    "--weight-tying"]."""
    argv = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        argv += ([flag] if value else ["--no-" + flag[2:]]) if isinstance(value, bool) else [flag, str(value)]
    return argv


TINY_FLAGS = flags(TINY_RUN)

# The model of the layer and whole-model checks: several heads, two blocks, three experts, a vocabulary that is
# not a power of two. The expert fields matter only with c_network = "moe".
SHAPE = dict(vocab_size=11, n_ctx=8, n_emb=12, head_size=16, n_heads=4, n_layers=2, batch_size=3, n_experts=3,
             moe_expansion=2, moe_aux_weight=0.05)

SWITCHES = dict(c_sequence=["pre", "post"], c_attention=["mha", "moh"], c_network=["mlp", "moe"],
                moe_top_k=[0, 2], weight_tying=[False, True])
COMBINATIONS = [dict(zip(SWITCHES, values)) for values in itertools.product(*SWITCHES.values())
                if not (values[2] == "mlp" and values[3] == 2)]  # top_k means nothing without experts
COMBINATIONS += [dict(lm_head_bias=False), dict(weight_tying=True, lm_head_bias=False),   # GPT-2's head
                 dict(c_sequence="post", c_network="moe", moe_top_k=2, lm_head_bias=False)]


# without the Q, K, V and gate biases, as the original notebook's models are (docs/IMPORT.md), on each mixer,
# network and norm order
ORIGINAL_VARIANTS = [dict(qkv_bias=False, gate_bias=False),
                     dict(c_attention="moh", c_network="moe", qkv_bias=False, gate_bias=False),
                     dict(c_sequence="post", c_attention="moh", qkv_bias=False),
                     dict(c_network="moe", moe_top_k=2, gate_bias=False)]


def variant_id(variant: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in variant.items()) or "default"


def nontrivial_gpt(variant=None, dtype="float64", dropout=0.0, seed=0, **overrides):
    """A model of SHAPE (with the switches of ``variant`` and any field in ``overrides``) whose every parameter
    is random: zero biases and unit gains would hide backward bugs. The values are large enough that every
    gradient is well above the finite differences' rounding (post-norm's first attention sees raw embeddings: at
    the 0.02 scale of the init its Q and K gradients are ~1e-4)."""
    config = Config(**{**SHAPE, **(variant or {}), **overrides, "dropout": dropout, "dtype": dtype})
    gpt = GPT(config, seed=seed)
    rng = np.random.default_rng(100 + seed)
    for p in gpt.params.values():
        p += (rng.standard_normal(p.shape) * 0.3).astype(p.dtype)
    return gpt


def relative_error(ours, reference) -> float:
    """max|ours - reference| / max|reference|: the worst element's error against the reference's largest
    magnitude; the absolute max-diff when the reference is all zeros."""
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    diff = float(np.max(np.abs(ours - reference)))
    scale = float(np.max(np.abs(reference)))
    return diff / scale if scale > 0 else diff


def interrupt_at(step, sig=signal.SIGINT):
    """An on_step callback that sends this process ``sig`` after step ``step``: a Ctrl-C at a known step."""
    def on_step(s):
        if s == step:
            os.kill(os.getpid(), sig)
    return on_step


def check_model_on_device(xp, array_type, variant, rtol, atol):
    """Forward, loss and every gradient (float64, training mode with dropout) of a model whose arrays live in
    xp, against the same model in NumPy: the same numbers to rtol/atol, every gradient an ``array_type``."""
    from littlebaby.nn.backend import to_host
    config = Config(**SHAPE, **variant, dropout=0.1, dtype="float64")
    host, on_device = GPT(config, seed=3), GPT(config, seed=3).move_to(xp)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))
    loss, grads = host.loss_and_grads(idx, targets)
    device_loss, device_grads = on_device.loss_and_grads(idx, targets)
    assert device_loss == pytest.approx(loss, rel=rtol)
    for name, g in grads.items():
        assert isinstance(device_grads[name], array_type), name
        np.testing.assert_allclose(to_host(device_grads[name]), g, rtol=rtol, atol=atol, err_msg=name)
    np.testing.assert_allclose(to_host(on_device.forward(idx)), host.forward(idx), rtol=rtol, atol=atol)
