"""A stand-in for CuPy, for proving the array-module switch on a machine without a GPU.

What it imitates is the part of CuPy that catches a forgotten switch: a CuPy array is a different type from a
NumPy array, and NumPy functions refuse it. Here a "device array" is a NumPy array subclass whose
``__array_function__`` raises, so ``np.einsum(device_array)`` or ``np.concatenate([device_array])`` fails as it
would on a GPU, while the module ``FakeCupy`` (what ``array_module`` returns for device arrays) runs the same
NumPy function on the unwrapped data and wraps the result. Operators and methods (``a @ b``, ``a.sum()``) keep
the subclass, as they keep CuPy's type, and arithmetic that mixes a device array with a host array raises, as
on CuPy. So the arithmetic is exactly NumPy's, and any path that reaches for ``np.`` instead of ``xp.`` on a
device array raises, or leaves a plain NumPy array where a device array belongs.

``install(monkeypatch)`` puts it in ``sys.modules["cupy"]``, so ``littlebaby.device.array_module_for("cuda")``
imports it like the real thing.
"""

import sys
import types

import numpy as np


class DeviceArray(np.ndarray):
    """An array "on the fake GPU"."""

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} was given a device array; a layer must call its array module "
                        f"(xp.{func.__name__}) instead")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """Arithmetic between device arrays (and Python or NumPy scalars) stays on the device; an operand or
        output that is a host array is refused, as CuPy refuses mixing its arrays with NumPy's."""
        operands = inputs + kwargs.get("out", ())
        host = [a for a in operands if isinstance(a, np.ndarray) and not isinstance(a, DeviceArray) and a.ndim]
        if host:
            raise TypeError(f"numpy.{ufunc.__name__} mixes a device array with a host array of shape "
                            f"{host[0].shape}; move it with xp.asarray, or make it with xp")
        plain = {k: to_plain(v) for k, v in kwargs.items()}
        return to_device(getattr(ufunc, method)(*to_plain(inputs), **plain))


def to_device(value):
    """Plain NumPy arrays in value (arrays, tuples, lists) -> device arrays; other values unchanged."""
    if isinstance(value, np.ndarray):
        return value.view(DeviceArray)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v) for v in value)
    return value


def to_plain(value):
    """Device arrays in value -> plain NumPy views of the same memory (writes through ``out=`` still land)."""
    if isinstance(value, np.ndarray):
        return value.view(np.ndarray)
    if isinstance(value, (tuple, list)):
        return type(value)(to_plain(v) for v in value)
    return value


def on_device(function):
    """function(NumPy arrays) -> the same function on device arrays, returning device arrays."""
    def wrapped(*args, **kwargs):
        return to_device(function(*to_plain(args), **{k: to_plain(v) for k, v in kwargs.items()}))
    return wrapped


class DeviceUfunc:
    """A NumPy ufunc called through the fake module, with its ``at`` / ``reduceat`` methods."""

    def __init__(self, ufunc):
        self.ufunc = ufunc

    def __call__(self, *args, **kwargs):
        return on_device(self.ufunc)(*args, **kwargs)

    def __getattr__(self, name):
        return on_device(getattr(self.ufunc, name))


class FakeCupy(types.ModuleType):
    """``xp`` for device arrays: every NumPy function, taking and giving device arrays; counts what is called."""

    def __init__(self):
        super().__init__("cupy")
        self.calls = {}
        self.gpus, self.current_gpu = 1, 0
        self.cuda = types.SimpleNamespace(
            Device=self._device,
            runtime=types.SimpleNamespace(CUDARuntimeError=RuntimeError, getDeviceCount=lambda: self.gpus,
                                          getDeviceProperties=lambda index: {"name": b"fake GPU"}))

    def _device(self, index=None):
        """``cupy.cuda.Device(index)``: ``.id``, and ``.use()`` to make it the current GPU."""
        index = self.current_gpu if index is None else index
        return types.SimpleNamespace(id=index, use=lambda: setattr(self, "current_gpu", index))

    def __getattr__(self, name):
        target = getattr(np, name)
        self.calls[name] = self.calls.get(name, 0) + 1
        if isinstance(target, np.ufunc):
            return DeviceUfunc(target)
        if callable(target) and not isinstance(target, type):
            return on_device(target)
        return target                   # dtypes and constants

    def get_array_module(self, *arrays):
        return self if any(isinstance(a, DeviceArray) for a in arrays) else np

    def asarray(self, array, dtype=None):
        """Host -> device: a copy, as a transfer to a GPU is; a device array of the right dtype as it is."""
        if isinstance(array, DeviceArray) and dtype in (None, array.dtype):
            return array
        return np.array(to_plain(array), dtype=dtype).view(DeviceArray)

    def asnumpy(self, array):
        """Device -> host: a plain NumPy copy."""
        return np.array(to_plain(array))


def install(monkeypatch):
    """Make ``import cupy`` give a fresh FakeCupy for the rest of the test; return it."""
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake
