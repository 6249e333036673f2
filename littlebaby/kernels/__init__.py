"""Compiled kernels that run beside the NumPy layers, never instead of them.

The layers in ``littlebaby.nn`` are the readable reference and all the core needs. A kernel here computes what
one of them computes, in fewer passes over memory (fused, compiled by numba), and a test proves it equals its
NumPy twin in float64 and float32, forward and backward. Which set runs is chosen once per run:

    numpy   the layers of littlebaby.nn as written
    numba   the kernels of this package where one exists, the NumPy layers elsewhere
    auto    numba when it imports and compiles, else numpy with one line saying why (the default)

numba is imported only here and only when asked for, so ``import littlebaby.model`` needs NumPy alone.
"""

import importlib

from littlebaby.errors import BabyError

KERNELS = ("auto", "numpy", "numba")
NUMBA_HELP = 'pip install numba (it comes with `pip install -e .`)'


def numba_or_reason():
    """(the numba module, None), or (None, why it cannot be used): not installed or failing to import."""
    try:
        return importlib.import_module("numba"), None
    except Exception as e:  # ImportError, or a numba built for another NumPy raising at import
        return None, f"numba could not be imported ({type(e).__name__}: {e})"


def resolve(choice: str = "auto") -> tuple[str, str | None]:
    """(the kernel set to use, a one-line note when ``auto`` fell back to numpy, else None).

    ``numba`` asked for explicitly and unavailable is an error; ``auto`` falls back with a note."""
    if choice not in KERNELS:
        raise BabyError(f"kernels must be one of {', '.join(KERNELS)}, got {choice!r}")
    if choice == "numpy":
        return "numpy", None
    numba, reason = numba_or_reason()
    if numba is None:
        if choice == "numba":
            raise BabyError(f"--kernels numba: {reason}; {NUMBA_HELP}, or pass --kernels numpy")
        return "numpy", f"numba kernels unavailable, using the NumPy layers: {reason}"
    return "numba", None
