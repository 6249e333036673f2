"""Shared by test_hf_export.py and test_hf_import.py: the texts, the tolerance, a CLI runner, and the
transformers-side helpers (a GPT-2 with random parameters, a tokenizer trained by tokenizers).

Tolerance: float32 logits agree when max|ours - theirs| / max|theirs| < 1e-4, the parity tests' float32 bound.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

transformers = pytest.importorskip("transformers", reason="the Hugging Face tests need transformers "
                                                          "(pip install -e '.[test]')")
import tokenizers  # noqa: E402
import torch  # noqa: E402

from helpers import TEXT as TINY_RUN_TEXT  # noqa: E402
from littlebaby.cli import main  # noqa: E402

TOLERANCE = 1e-4
GPT2_SHAPE = ["--n-ctx", "12", "--n-emb", "16", "--head-size", "16", "--n-heads", "2", "--n-layers", "2",
              "--batch-size", "4", "--lr", "0.01", "--no-lm-head-bias"]
TEXT = TINY_RUN_TEXT + "CLÉO:\nZürich, naïve café — 50 € and 12345 ½ ² emoji 😀, 中文 عربى\x1c\u3000tab\t.\n\n"
PROMPTS = ["ANNE:\nI have 3 roses, and you have none.", "BEN:\nThen give me one.\n\nANNE:", "CLÉO:\nZürich 😀 ½"]
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def baby(*args):
    return main([str(a) for a in args])


def relative_error(ours, theirs):
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()            # (B, T, V)


def batch_of(tokenizer, prompts, T):
    """The prompts' ids, each cut to its last T (all prompts are at least T tokens long here)."""
    rows = [tokenizer.encode(p)[-T:] for p in prompts]
    assert all(len(r) == T for r in rows)
    return np.array(rows)                                          # (B, T)


def train_hf_tokenizer(text, vocab_size):
    """A GPT-2 style byte-level BPE trained with tokenizers; its ids are tokenizers' order, not ours."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
                                             show_progress=False)
    tok.train_from_iterator([text], trainer)
    return tok


def random_gpt2(vocab_size, tied, n_positions=16, n_embd=24, n_layer=2, n_head=3, seed=0):
    """A GPT2LMHeadModel with every parameter random: no LayerNorm gain 1 and no bias 0 to hide a bad mapping."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd,
                                     n_layer=n_layer, n_head=n_head, tie_word_embeddings=tied,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if "ln" in name and name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[0] ** 0.5)
    return model
