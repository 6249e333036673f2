"""Which array module holds the arrays: NumPy on the CPU, or CuPy on an NVIDIA GPU.

CuPy mirrors NumPy's API, so every layer is written once: it asks ``xp = array_module(x)`` for the module
that holds its input and calls ``xp.zeros``, ``xp.einsum``, ``xp.exp`` ... where a NumPy-only file would say
``np.``. Operators (``@``, ``*``, ``+=``) and methods (``.sum``, ``.reshape``) need no switch: the array's own
type picks the implementation.

The core never imports CuPy. ``array_module`` only looks for it among the modules already imported, which
happens when a user asks for ``--device cuda`` (see ``littlebaby.device``); until then it is always NumPy.
"""

import sys

import numpy as np


def array_module(*arrays):
    """NumPy, or CuPy when it is loaded and any of ``arrays`` lives on the GPU (``cupy.get_array_module``)."""
    cupy = sys.modules.get("cupy")
    return np if cupy is None else cupy.get_array_module(*arrays)


def to_host(array):
    """The same values as a NumPy array on the CPU: a copy from the GPU, the array itself when it is NumPy's."""
    xp = array_module(array)
    return np.asarray(array) if xp is np else xp.asnumpy(array)


# layer name -> its compiled twin (littlebaby/kernels), filled by ``littlebaby.kernels.use("numba")`` for a run;
# empty, the NumPy layers run as written. Only plain NumPy arrays go to a twin: CuPy's never do.
COMPILED_TWINS = {}


def compiled_twin(name, array):
    """The compiled twin in use for layer ``name`` when ``array`` is a NumPy array, else None."""
    twin = COMPILED_TWINS.get(name)
    return twin if twin is not None and type(array) is np.ndarray else None
