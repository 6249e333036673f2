"""The Little Baby: a GPT-style language model in NumPy, every gradient written by hand.

Reading order for a learner: ``littlebaby.nn`` (the layer pairs) -> ``littlebaby.model`` ->
``littlebaby.optim`` -> ``littlebaby.training`` -> ``littlebaby.sampling``.

The core (``nn``, ``model``, ``optim``, ``kvcache``, ``decode``) imports NumPy and the standard library only, and importing
it imports nothing else: the workflow names below, which mirror the ``baby`` commands and need safetensors, tqdm
and matplotlib, are loaded on first use (PEP 562). ``import_original`` and ``export_original`` read and
write the runs of the original The Little Baby notebook (``littlebaby.interop``).

    import littlebaby
    run = littlebaby.train(data="input.txt", steps=500)      # loads littlebaby.api here, not at import
"""

import importlib

__version__ = "0.1.0"

WORKFLOW = {   # name -> the module that defines it
    "train": "littlebaby.api", "finetune": "littlebaby.api", "generate": "littlebaby.api",
    "load_run": "littlebaby.api", "resume_run": "littlebaby.api", "Run": "littlebaby.api",
    "Generation": "littlebaby.api", "TrainConfig": "littlebaby.training",
    "import_original": "littlebaby.api", "export_original": "littlebaby.api",
    "export_hf": "littlebaby.interop.hf", "import_hf": "littlebaby.interop.hf",
}
__all__ = list(WORKFLOW)


def __getattr__(name):
    """``littlebaby.train`` and the other workflow names: imported the first time they are asked for."""
    if name not in WORKFLOW:
        raise AttributeError(f"module 'littlebaby' has no attribute {name!r}")
    value = getattr(importlib.import_module(WORKFLOW[name]), name)
    globals()[name] = value   # later lookups find it directly
    return value


def __dir__():
    return sorted(set(globals()) | set(WORKFLOW))
