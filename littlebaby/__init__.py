"""The Little Baby: a GPT-style language model in NumPy, every gradient written by hand.

Reading order for a learner: ``littlebaby.nn`` (the layer pairs) -> ``littlebaby.model`` ->
``littlebaby.optim`` -> ``littlebaby.train`` -> ``littlebaby.generate``.

The workflow functions (``train``, ``finetune``, ``generate``, ``load_run``) are imported on first use, so that
``import littlebaby.nn`` or ``littlebaby.model`` loads NumPy and nothing else.
"""

__version__ = "0.1.0"

_API = ("train", "finetune", "generate", "load_run", "resume_run")


def __getattr__(name):
    if name in _API:
        from littlebaby import api
        return getattr(api, name)
    raise AttributeError(f"module 'littlebaby' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
