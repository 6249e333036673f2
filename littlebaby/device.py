"""``--device cpu|cuda``: which array module the model's arrays live in.

cpu is NumPy. cuda is CuPy on an NVIDIA GPU: the same layers, model and optimizer run unchanged, because each
layer takes its array module from its input (``littlebaby.nn.backend``). Only the edges of a run cross between
host and GPU: the parameters go over once at the start, each batch of token ids and each dropout mask (drawn
on the host, so a seed gives the same masks on either device) on the way in, and the loss, the sampled
logits and the saved weights on the way out.

CuPy is an optional extra (``pip install -e ".[cuda]"``); this module is the only place that imports it.
"""

import numpy as np

from littlebaby import parallel
from littlebaby.errors import BabyError, ConfigError

DEVICES = ("cpu", "cuda")
CUDA_HELP = ('pip install -e ".[cuda]" installs CuPy with the CUDA 12 libraries (an NVIDIA driver is still '
             "needed); for other CUDA versions see https://docs.cupy.dev/en/stable/install.html")


def array_module_for(device: str):
    """NumPy for "cpu", CuPy for "cuda", or a clear error saying what is missing."""
    if device == "cpu":
        return np
    if device != "cuda":
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    try:
        import cupy
    except ImportError as e:  # not installed, or installed for a CUDA whose libraries are missing
        raise BabyError(f"`device='cuda'` needs CuPy, which could not be imported ({e}); {CUDA_HELP}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as e:
        raise BabyError(f"`device='cuda'`: CuPy is installed but found no usable CUDA GPU ({e}); "
                        "train with `device='cpu'`") from None
    if count == 0:
        raise BabyError("`device='cuda'`: CuPy is installed but this machine has no CUDA GPU; "
                        "train with `device='cpu'`")
    cupy.cuda.Device(parallel.local_rank() % count).use()   # under MPI, each rank of a machine its own GPU
    return cupy


def describe(xp) -> str:
    """"cpu", or "cuda:0 <GPU name>" for the report."""
    if xp is np:
        return "cpu"
    index = xp.cuda.Device().id
    name = xp.cuda.runtime.getDeviceProperties(index)["name"]
    return f"cuda:{index} {name.decode() if isinstance(name, bytes) else name}"
