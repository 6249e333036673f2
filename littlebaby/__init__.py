"""The Little Baby: a GPT-style language model in NumPy, every gradient written by hand.

Reading order for a learner: ``littlebaby.nn`` (the layer pairs) -> ``littlebaby.model`` ->
``littlebaby.optim`` -> ``littlebaby.training`` -> ``littlebaby.sampling``.

The core (``nn``, ``model``, ``optim``, ``kvcache``) imports NumPy and the standard library only. The workflow
functions below mirror the ``baby`` commands: ``littlebaby.train`` is the function that trains (the training
loop is the module ``littlebaby.training``).
"""

__version__ = "0.1.0"

from littlebaby.api import Generation, Run, finetune, generate, load_run, resume_run, train  # noqa: E402
from littlebaby.training import TrainConfig  # noqa: E402

__all__ = ["train", "finetune", "generate", "load_run", "resume_run", "Run", "Generation", "TrainConfig"]
