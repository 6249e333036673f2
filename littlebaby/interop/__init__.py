"""Other software's model files, read into littlebaby runs and written back.

``original``: the runs of the original The Little Baby notebook (v0.0.5 to v0.0.9), the project this one grew
from. Nothing here is part of the core: it maps files onto ``littlebaby.model.Config`` and its parameter dict,
and the run-writing code of ``littlebaby.api`` does the rest.
"""
