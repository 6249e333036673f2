"""The layers of the GPT, each a ``*_forward`` immediately followed by its hand-written ``*_backward``.

Dimensions, used in every shape comment of the package (tests/test_docs.py checks that these are all):

    B  batch size                     T  time (sequence length, <= n_ctx, the context length)
    C  channels (n_emb)               V  vocabulary size
    H  head_size: total width of Q, K and V across all heads
    NH number of heads (n_heads)      hs size of one head, H // NH
    L  number of layers (n_layers)    F  MLP hidden width, 4 * C
    S  positions a query attends over: T, or more with a KV cache of earlier tokens
    Tq queries in one block of attention, seeing keys 0 .. s1-1 (nn.attention.query_blocks)
    N  rows of a flattened batch, B * T (N_train, N_val: tokens of the training and validation split)
    IN, OUT  a linear layer's input and output widths
    K  width of the rows a softmax normalises; k the experts each token runs (moe_top_k)
    NE number of experts              Fe an expert's hidden width, moe_expansion * C
    M  tokens routed to one expert    U  distinct token ids in a batch
    T0 tokens of a prompt             n  tokens so far in generation, or a count the comment names
    R  runs of consecutive code points (tokenizers/unicode_classes.py)

Conventions: a forward returns ``(out, cache)``; its backward takes ``(dout, cache)`` and returns the gradient of
its input first, then one gradient per parameter, named ``d`` + the parameter's name. The cache holds the minimum
the backward needs, and each forward says why it keeps what it keeps. Weights are stored ``(in, out)`` so a
linear layer is ``x @ w + b`` with no transposes. A layer calls ``xp = array_module(x)`` for NumPy or CuPy,
whichever holds its input (``backend.py``), so the same code runs on the CPU and on a GPU.
"""

from littlebaby.nn.attention import attention_backward, attention_forward
from littlebaby.nn.block import block_backward, block_forward
from littlebaby.nn.dropout import dropout_backward, dropout_forward
from littlebaby.nn.embedding import (
    position_embedding_backward,
    position_embedding_forward,
    token_embedding_backward,
    token_embedding_forward,
)
from littlebaby.nn.gelu import gelu_backward, gelu_forward
from littlebaby.nn.layernorm import layernorm_backward, layernorm_forward
from littlebaby.nn.linear import linear_backward, linear_forward
from littlebaby.nn.loss import cross_entropy_backward, cross_entropy_forward
from littlebaby.nn.mlp import mlp_backward, mlp_forward

__all__ = [name for name in dir() if name.endswith(("_forward", "_backward"))]
