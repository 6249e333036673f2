"""Compiled kernels that run beside the NumPy layers, never instead of them.

The layers in ``littlebaby.nn`` are the readable reference and all the core needs. A kernel here computes what
one of them computes, in fewer passes over memory (fused, compiled by numba), and a test proves it equals its
NumPy twin in float64 and float32, forward and backward. Which set runs is chosen once per run:

    numpy   the layers of littlebaby.nn as written
    numba   the kernels of this package where one exists, the NumPy layers elsewhere
    auto    numba when it imports and compiles, else numpy with one line saying why (the default)

numba is imported only here and only when asked for, so ``import littlebaby.model`` needs NumPy alone.
"""

import contextlib
import importlib

from littlebaby.errors import BabyError
from littlebaby.nn.backend import COMPILED_TWINS

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
            raise BabyError(f"`kernels='numba'`: {reason}; {NUMBA_HELP}, or use `kernels='numpy'`")
        return "numpy", f"numba kernels unavailable, using the NumPy layers: {reason}"
    return "numba", None


def twins():
    """layer name -> compiled twin, for every layer this package has a kernel for (imports numba)."""
    from littlebaby.kernels import adamw, attention, gelu, layernorm
    return {"gelu_forward": gelu.gelu_forward, "gelu_backward": gelu.gelu_backward,
            "layernorm_forward": layernorm.layernorm_forward, "layernorm_backward": layernorm.layernorm_backward,
            "causal_softmax_forward": attention.causal_softmax_forward,
            "causal_softmax_backward": attention.causal_softmax_backward,
            "adamw_update": adamw.adamw_update}


def use(choice: str = "auto", dtype="float32") -> tuple[str, str | None]:
    """Put the kernel set ``choice`` in use for this process: (its name, a one-line note or None).

    With numba, every kernel is compiled (or loaded from numba's disk cache) for ``dtype`` here, on tiny
    inputs, so a kernel that fails to compile is found before training starts: ``auto`` then falls back to
    the NumPy layers with a note, an explicit ``numba`` is an error."""
    name, note = resolve(choice)
    COMPILED_TWINS.clear()
    if name == "numba":
        try:
            compiled = twins()
            warm_up(compiled, dtype)
        except Exception as e:  # numba's errors when a kernel does not compile for this machine or dtype
            if choice == "numba":
                raise BabyError(f"`kernels='numba'`: a kernel failed to compile ({type(e).__name__}: "
                                f"{' '.join(str(e).split())[:200]}); use `kernels='numpy'`") from None
            return "numpy", f"numba kernels failed to compile, using the NumPy layers ({type(e).__name__})"
        COMPILED_TWINS.update(compiled)
    return name, note


def check(choice: str, dtype="float32") -> None:
    """Raise the error ``use`` would raise for ``choice``, without changing the kernels in use: a run asking
    for numba where it cannot work stops before it writes anything (``auto`` never raises)."""
    if resolve(choice)[0] == "numba" and choice == "numba":
        with using(choice, dtype):
            pass


def in_use() -> str:
    """The kernel set the layers run now: "numba" or "numpy"."""
    return "numba" if COMPILED_TWINS else "numpy"


@contextlib.contextmanager
def using(choice: str, dtype="float32"):
    """Within the block, the kernel set ``choice`` (as ``use``, which gives the block its (name, note)); the
    previous set after, so that a run leaves the process as it found it."""
    previous = dict(COMPILED_TWINS)
    in_use = use(choice, dtype)
    try:
        yield in_use
    finally:
        COMPILED_TWINS.clear()
        COMPILED_TWINS.update(previous)


def warm_up(compiled, dtype):
    """Call every kernel once on tiny inputs of ``dtype``: numba compiles on the first call."""
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)                # (B, T, C)
    w, b = np.ones(4, dtype), np.zeros(4, dtype)
    out, cache = compiled["gelu_forward"](x)
    compiled["gelu_backward"](out, cache)
    out, cache = compiled["layernorm_forward"](x, w, b)
    compiled["layernorm_backward"](out, cache)
    scores = rng.standard_normal((2, 2, 3, 5)).astype(dtype)        # (B, NH, Tq, S)
    for keep in (None, np.ones(scores.shape, dtype=bool)):
        att = scores.copy()
        compiled["causal_softmax_forward"](att, 0.5, keep)
        compiled["causal_softmax_backward"](scores.copy(), att, keep, 0.5)
    compiled["adamw_update"](w.copy(), b, b.copy(), b.copy(), 1.0, 0.9, 0.99, 1e-8, 1e-3)
