"""Every random stream of a run comes from its one seed, and this is the table of them.

Each use of randomness draws from its own stream, so drawing more from one (a longer eval, a bigger batch) never
shifts another, and a seed gives the same run every time:

    stream                    generator                                    drawn by
    the initial weights       SeedSequence(seed, spawn_key=(0,))           GPT(config, seed)
    dropout masks             SeedSequence(seed, spawn_key=(1,))           GPT(config, seed): gpt.rng
    ... of share s > 0        SeedSequence(seed, spawn_key=(1, s))         MPI rank s (see dropout_rng)
    Stream.EVAL_BATCHES       default_rng([seed, 1])                       the fixed batches of every eval
    Stream.TRAIN_BATCHES      default_rng([seed, 2])                       the random windows of each step
    Stream.NEW_TOKEN_ROWS     default_rng([seed, 3])                       a finetune's rows for new characters
    Stream.COMPLETION         default_rng([seed, 4])                       the completion sampled after training
    TIMING_SEED               default_rng(12345)                           the batch that times a step (max_time)

The first two are what ``SeedSequence(seed).spawn(2)`` returns. The values are those littlebaby has always
used, so a seed trains the same run as before. NumPy and the standard library only: the core imports it.
"""

import enum

import numpy as np

INIT, DROPOUT = 0, 1          # spawn keys of the weights' and the dropout masks' streams
TIMING_SEED = 12345           # the timing probe changes nothing in the run, so it needs no seed of its own


class Stream(enum.IntEnum):
    """The streams drawn as ``default_rng([seed, id])``."""
    EVAL_BATCHES = 1          # littlebaby.data.fixed_batches: the same windows at every eval
    TRAIN_BATCHES = 2         # the batches of the training loop (saved in the checkpoint, so resumable)
    NEW_TOKEN_ROWS = 3        # finetune: N(0, 0.02) rows of wte and the head for characters new to the vocabulary
    COMPLETION = 4            # the 500 tokens sampled into completion_G.txt
    QUALITY_SAMPLE = 5        # the longer sample the quality figures read their words and speaker lines from


def stream(seed: int, which: Stream) -> np.random.Generator:
    """The generator of stream ``which`` of a run seeded ``seed``."""
    return np.random.default_rng([seed, int(which)])


def init_rng(seed: int) -> np.random.Generator:
    """The generator of the initial weights."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(INIT,)))


def dropout_rng(seed: int, share: int = 0) -> np.random.Generator:
    """The generator of the dropout masks of share ``share`` of every batch, in a run seeded ``seed``.

    A share is the slice of each batch that one worker computes: under ``mpiexec -n K`` rank r computes share r;
    with T worker threads in each process, thread t of rank r would compute share r * T + t. Each share needs a
    stream of its own, or two workers with equally many rows would drop the very same units. Share 0 is the
    stream of a one-process run, so one process (and rank 0) draws exactly what it always drew; the stream of
    share s > 0 is independent of it and of every other share's (spawn keys (1,) and (1, s)).

    >>> dropout_rng(0).random() == dropout_rng(0, share=0).random() != dropout_rng(0, share=1).random()
    True
    """
    spawn_key = (DROPOUT,) if share == 0 else (DROPOUT, share)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn_key))
