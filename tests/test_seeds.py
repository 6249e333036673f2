"""The table of random streams: each stream is the one earlier versions drew, and no two streams coincide."""

import numpy as np

from littlebaby import seeds
from littlebaby.model import GPT, Config
from littlebaby.nn.dropout import dropout_mask


def draws(rng, n=4):
    return rng.random(n).tolist()


def test_the_streams_are_the_ones_littlebaby_always_drew():
    """The values of the table are fixed: changing one would silently change every seeded run."""
    init, dropout = np.random.SeedSequence(7).spawn(2)
    assert draws(seeds.init_rng(7)) == draws(np.random.default_rng(init))
    assert draws(seeds.dropout_rng(7)) == draws(np.random.default_rng(dropout))
    for which, historic_id in [(seeds.Stream.EVAL_BATCHES, 1), (seeds.Stream.TRAIN_BATCHES, 2),
                               (seeds.Stream.NEW_TOKEN_ROWS, 3), (seeds.Stream.COMPLETION, 4)]:
        assert draws(seeds.stream(7, which)) == draws(np.random.default_rng([7, historic_id]))
    assert seeds.TIMING_SEED == 12345


def test_no_two_streams_of_a_seed_coincide():
    streams = [seeds.init_rng(3), seeds.dropout_rng(3), *(seeds.stream(3, which) for which in seeds.Stream)]
    first = [rng.random() for rng in streams]
    assert len(set(first)) == len(first)


def test_a_model_draws_its_weights_and_masks_from_the_table():
    config = Config(vocab_size=11, n_ctx=8, n_emb=12, head_size=16, n_heads=4, n_layers=1)
    gpt = GPT(config, seed=5)
    assert draws(gpt.rng) == draws(seeds.dropout_rng(5))
    wte = (seeds.init_rng(5).standard_normal((11, 12)) * 0.02).astype(np.float32)  # the first array drawn
    np.testing.assert_array_equal(gpt.params["wte"], wte)


def test_each_share_of_a_batch_draws_its_own_dropout_masks():
    """Share 0 (one process, MPI rank 0) draws the stream a model always drew; the other shares draw others."""
    masks = [dropout_mask((2, 8, 16), 0.3, seeds.dropout_rng(4, share)) for share in range(3)]
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    np.testing.assert_array_equal(masks[0], dropout_mask((2, 8, 16), 0.3, GPT(Config(), seed=4).rng))
