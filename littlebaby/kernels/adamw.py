"""One AdamW update in one pass over each parameter: the twin of the loop body of ``optim.AdamW.step``.

NumPy's update is 11 passes over every parameter, its moments and a scratch buffer; here each element of the
parameter, its gradient and both moments is read and written once.
"""

import numpy as np

from littlebaby.kernels.jit import constants, kernel


def adamw_update(p, g, m, v, decay, beta1, beta2, eps, step_size):
    """In place: p *= decay; m, v the moving averages of g and g^2; p -= step_size m / (sqrt(v) + eps).
    ``eps`` and ``step_size`` already carry the bias corrections (see ``optim.AdamW.step``)."""
    _update(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1),
            *constants(p.dtype, decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, step_size))


@kernel
def _update(p, g, m, v, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size):
    for i in range(p.size):
        gi = g[i]
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step_size * mi / (np.sqrt(vi) + eps)
