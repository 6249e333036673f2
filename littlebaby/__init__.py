"""The Little Baby: a GPT-style language model in NumPy, every gradient written by hand.

Reading order for a learner: ``littlebaby.nn`` (the layer pairs) -> ``littlebaby.model`` ->
``littlebaby.optim`` -> ``littlebaby.train`` -> ``littlebaby.generate``.

The core (``nn``, ``model``, ``optim``, ``kvcache``, ``decode``) imports NumPy and the standard library only. The
workflow functions below mirror the ``baby`` commands. Note that ``littlebaby.train`` and ``littlebaby.generate``
are these functions; their modules are reached with ``from littlebaby.train import ...``.
"""

__version__ = "0.1.0"

from littlebaby.api import Generation, Run, finetune, generate, load_run, resume_run, train  # noqa: E402
from littlebaby.train import TrainConfig  # noqa: E402

__all__ = ["train", "finetune", "generate", "load_run", "resume_run", "Run", "Generation", "TrainConfig"]
