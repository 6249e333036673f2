"""Finite-difference gradient checking in float64, shared by the layer and model tests.

A check compares the analytic gradient with central differences ``(f(x + eps) - f(x - eps)) / (2 eps)`` at a
few random entries of one array, and reports the relative error of the probed vectors,
``||analytic - numeric|| / max(||analytic||, ||numeric||, 1e-4)``. The floor is for gradients that are exactly
zero: the key bias, for one, never changes a softmax (adding one constant to every score of a row), so its
analytic gradient is ~1e-17 while finite differences return rounding noise of ~1e-11; without a floor that reads
as a 100% error. With the 1e-6 tolerance the floor still demands an absolute agreement of 1e-10 there.
"""

import numpy as np

EPS = 1e-5  # balances truncation error O(eps^2) against rounding O(1e-16 / eps); measured best here
TOLERANCE = 1e-6


def numerical_grad(f, x, flat_positions, eps=EPS):
    """Central differences of the scalar f() with respect to x.flat[i] for each i (x is perturbed in place)."""
    out = np.empty(len(flat_positions))
    for n, i in enumerate(flat_positions):
        original = x.flat[i]
        x.flat[i] = original + eps
        plus = f()
        x.flat[i] = original - eps
        minus = f()
        x.flat[i] = original
        out[n] = (plus - minus) / (2 * eps)
    return out


def relative_error(analytic, numeric):
    scale = max(np.linalg.norm(analytic), np.linalg.norm(numeric), 1e-4)
    return float(np.linalg.norm(analytic - numeric) / scale)


def grad_error(f, x, analytic, rng, n_probes=12):
    """Relative error between analytic (shaped like x) and finite differences at n_probes random entries."""
    assert analytic.shape == x.shape, f"gradient shape {analytic.shape} != array shape {x.shape}"
    positions = rng.choice(x.size, size=min(n_probes, x.size), replace=False)
    numeric = numerical_grad(f, x, positions)
    return relative_error(analytic.reshape(-1)[positions], numeric)
