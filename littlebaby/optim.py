"""AdamW, the learning-rate schedule and global gradient-norm clipping.

The optimizer's state (first and second moments) lives here, keyed like the parameters; the model holds none.
"""

import math

from littlebaby.nn.backend import array_module, compiled_twin


class AdamW:
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``: decay shrinks the weight directly
    (``w -= lr * weight_decay * w``) instead of being added to the gradient, and applies only to arrays with
    ndim >= 2 (weight matrices and embeddings), never to biases or LayerNorm gains."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1):
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.step_count = 0
        xp = array_module(*params.values())                 # the moments live where the parameters do
        self.m = {name: xp.zeros_like(p) for name, p in params.items()}  # first moment, like each param
        self.v = {name: xp.zeros_like(p) for name, p in params.items()}  # second moment, like each param
        self._buffers = {}

    def step(self, params, grads, lr=None):
        """Update params in place from grads, at learning rate lr (default: the constructor's)."""
        lr = self.lr if lr is None else lr
        beta1, beta2 = self.betas
        self.step_count += 1
        bias1 = 1.0 - beta1 ** self.step_count
        bias2 = 1.0 - beta2 ** self.step_count
        step_size = lr / bias1
        # sqrt(v_hat) + eps = (sqrt(v) + eps * sqrt(bias2)) / sqrt(bias2): fold sqrt(bias2) into the step size
        root_bias2 = math.sqrt(bias2)
        eps, step_size = self.eps * root_bias2, step_size * root_bias2
        xp = array_module(*params.values())
        for name, p in params.items():
            g, m, v = grads[name], self.m[name], self.v[name]
            decay = 1.0 - lr * self.weight_decay if p.ndim >= 2 else 1.0
            twin = compiled_twin("adamw_update", p)         # littlebaby/kernels/adamw.py, when in use
            if twin is not None:
                twin(p, g, m, v, decay, beta1, beta2, eps, step_size)
                continue
            scratch = self._scratch(name, p)                # one reused buffer instead of six temporaries
            if decay != 1.0:
                p *= decay
            m *= beta1                                      # m = beta1 m + (1 - beta1) g
            xp.multiply(g, 1.0 - beta1, out=scratch)
            m += scratch
            v *= beta2                                      # v = beta2 v + (1 - beta2) g^2
            xp.multiply(g, g, out=scratch)
            scratch *= 1.0 - beta2
            v += scratch
            xp.sqrt(v, out=scratch)                         # p -= lr m_hat / (sqrt(v_hat) + eps)
            scratch += eps
            xp.divide(m, scratch, out=scratch)
            scratch *= step_size
            p -= scratch

    def _scratch(self, name, p):
        """A buffer shaped like p, kept between steps (not part of the state: its contents are never read)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != p.shape or buffer.dtype != p.dtype:
            buffer = self._buffers[name] = array_module(p).empty_like(p)
        return buffer

    def state_dict(self):
        return {"step": self.step_count, "m": dict(self.m), "v": dict(self.v)}

    def load_state_dict(self, state):
        self.step_count = int(state["step"])
        xp = array_module(*self.m.values())                 # a saved state is on the host: copy it over
        for name in self.m:
            self.m[name][...] = xp.asarray(state["m"][name])
            self.v[name][...] = xp.asarray(state["v"][name])


def lr_schedule(step, max_steps, lr, warmup_steps=0, min_lr=0.0):
    """Learning rate at ``step`` (counted from 0): linear warmup to lr, then cosine decay to min_lr at max_steps.

        step < warmup_steps         lr * (step + 1) / warmup_steps
        warmup_steps <= step < max  min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2,
                                    progress = (step - warmup_steps) / (max_steps - warmup_steps)
        step >= max_steps           min_lr
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global L2 norm is at most max_norm; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: the scale is max_norm / (norm + 1e-6), applied only when below 1.
    """
    total = math.sqrt(sum(float(array_module(g).vdot(g, g)) for g in grads.values()))
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for g in grads.values():
            g *= scale
    return total
