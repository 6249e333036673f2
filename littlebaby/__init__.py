"""The Little Baby: a GPT-style language model in NumPy, every gradient written by hand.

Reading order for a learner: ``littlebaby.nn`` (the layer pairs) -> ``littlebaby.model`` ->
``littlebaby.optim`` -> ``littlebaby.train`` -> ``littlebaby.generate``.
"""

__version__ = "0.1.0"
