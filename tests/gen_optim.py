#!/usr/bin/python3
"""Writes tests/data/optim_*.txt: float64 reference values of BrainPy 2.8.2's
optimizers and schedulers (brainpy/optim/optimizer.py and scheduler.py as
summarised in docs/brainpy-semantics.md section 3), for
tests/test_optim*.c and tests/test_scheduler*.c.

BrainPy itself is not needed: its update rules and schedules are written out
below in NumPy float64, in BrainPy's operation order (HEAD: Adam/AdamW keep
their own step counter, MomentumNesterov applies the look-ahead, MultiStepLR
counts milestones < i). Run with Debian's python: /usr/bin/python3 tests/gen_optim.py
"""
import math
import os
from fractions import Fraction

import numpy as np

from fixture_io import FixtureWriter

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
STEPS = 20
SCHED_LEN = 30


# ------------------------------------------------------------------ schedulers

class Sched:
    """Scheduler(lr, last_epoch) / CallBasedScheduler(lr, last_epoch, last_call)."""

    def __init__(self, fn, call_based, last_epoch=-1, last_call=-1):
        self.fn = fn
        self.call_based = call_based
        self.last_epoch = last_epoch
        self.last_call = last_call

    def __call__(self):
        return self.fn((self.last_call if self.call_based else self.last_epoch) + 1)

    def step_epoch(self):
        self.last_epoch += 1

    def step_call(self):
        if self.call_based:
            self.last_call += 1


def constant(lr):
    return Sched(lambda i: lr, False)


def step_lr(lr, step_size, gamma=0.1, last_epoch=-1):
    return Sched(lambda i: lr * gamma ** (i // step_size), False, last_epoch)


def multi_step_lr(lr, milestones, gamma=0.1, last_epoch=-1):
    ms = np.array(milestones)
    return Sched(lambda i: lr * gamma ** int(np.sum(ms < i)), False, last_epoch)


def exponential_lr(lr, gamma, last_epoch=-1):
    return Sched(lambda i: lr * gamma ** i, False, last_epoch)


def cosine_annealing_lr(lr, t_max, eta_min=0.0, last_epoch=-1):
    return Sched(lambda i: eta_min + (lr - eta_min) * (1 + math.cos(np.pi * i / t_max)) / 2, False, last_epoch)


def exponential_decay_lr(lr, decay_steps, decay_rate, last_epoch=-1, last_call=-1):
    return Sched(lambda i: lr * decay_rate ** (i / decay_steps), True, last_epoch, last_call)


def inverse_time_decay_lr(lr, decay_steps, decay_rate, staircase=False, last_epoch=-1, last_call=-1):
    if staircase:
        return Sched(lambda i: lr / (1 + decay_rate * math.floor(i / decay_steps)), True, last_epoch, last_call)
    return Sched(lambda i: lr / (1 + decay_rate * i / decay_steps), True, last_epoch, last_call)


def polynomial_decay_lr(lr, decay_steps, final_lr, power=1.0, last_epoch=-1, last_call=-1):
    def f(i):
        i = min(i, decay_steps)
        return (1 - i / decay_steps) ** power * (lr - final_lr) + final_lr
    return Sched(f, True, last_epoch, last_call)


def piecewise_constant_lr(boundaries, values, last_epoch=-1, last_call=-1):
    b = np.array(boundaries)
    return Sched(lambda i: values[int(np.sum(i > b))], True, last_epoch, last_call)


def cosine_annealing_warm_restarts(lr, num_call_per_epoch, t_0, t_mult=1, eta_min=0.0, last_epoch=-1, last_call=-1):
    def f(i):
        # A true division: the epoch is fractional and the rate falls on every call.
        epoch = Fraction(i, num_call_per_epoch)
        if epoch < t_0:
            t_cur, t_i = epoch, t_0
        elif t_mult == 1:
            t_cur, t_i = epoch % t_0, t_0
        else:
            # BrainPy: n = floor(log(epoch/T_0*(T_mult-1)+1)/log(T_mult)), in floating point;
            # the same n in exact rationals (float log can fall one short at a cycle start).
            n = 0
            while Fraction(t_0 * (t_mult ** (n + 1) - 1), t_mult - 1) <= epoch:
                n += 1
            t_cur = epoch - Fraction(t_0 * (t_mult ** n - 1), t_mult - 1)
            t_i = t_0 * t_mult ** n
        return eta_min + (lr - eta_min) * (1 + math.cos(np.pi * float(t_cur) / t_i)) / 2
    return Sched(f, True, last_epoch, last_call)


SCHEDULERS = [
    ("constant", lambda: constant(0.3)),
    ("step_lr", lambda: step_lr(0.1, 3, 0.5)),
    ("step_lr_from4", lambda: step_lr(0.1, 3, 0.5, last_epoch=4)),
    ("multi_step_lr", lambda: multi_step_lr(0.1, [3, 7, 7, 12], 0.3)),
    ("exponential_lr", lambda: exponential_lr(0.1, 0.9)),
    ("cosine_annealing_lr", lambda: cosine_annealing_lr(0.1, 10, 0.001)),
    ("exponential_decay_lr", lambda: exponential_decay_lr(0.1, 5, 0.5)),
    ("inverse_time_decay_lr", lambda: inverse_time_decay_lr(0.1, 4, 0.5)),
    ("inverse_time_decay_lr_stair", lambda: inverse_time_decay_lr(0.1, 4, 0.5, staircase=True)),
    ("polynomial_decay_lr", lambda: polynomial_decay_lr(0.1, 10, 0.01, 2.0)),
    ("piecewise_constant_lr", lambda: piecewise_constant_lr([5, 10, 20], [0.1, 0.05, 0.01, 0.001])),
    ("warm_restarts_mult2", lambda: cosine_annealing_warm_restarts(0.1, 2, 2, 2, 0.001)),
    ("warm_restarts_mult1", lambda: cosine_annealing_warm_restarts(0.1, 1, 5, 1, 0.0)),
    ("warm_restarts_from3", lambda: cosine_annealing_warm_restarts(0.1, 3, 1, 3, 0.01, last_call=3)),
]


def sched_sequence(s):
    out = []
    for _ in range(SCHED_LEN):
        out.append(s())
        if s.call_based:
            s.step_call()
        else:
            s.step_epoch()
    return np.array(out)


# ------------------------------------------------------------------ optimizers

class Opt:
    """BrainPy's CommonOpt with one rule; params and slots are float64 arrays."""

    def __init__(self, kind, lr, weight_decay=None, **hp):
        self.kind = kind
        self.lr = lr if isinstance(lr, Sched) else constant(lr)
        self.wd = weight_decay
        self.hp = hp
        self.step = 0
        self.slots = {}
        self.slot_max = {}   # largest |slot| seen over the run: the scale its rounding errors live at

    def register(self, params):
        suffixes = {"sgd": [], "momentum": ["_v"], "nesterov": ["_v"], "adam": ["_m", "_v"],
                    "adamw": ["_m", "_v"] + (["_vmax"] if self.hp.get("amsgrad") else []),
                    "rmsprop": ["_cache"], "adagrad": ["_cache"]}[self.kind]
        for suf in suffixes:
            for k, p in params.items():
                self.slots[k + suf] = np.zeros_like(p)

    def decay(self, p, upd_sign, upd):
        # CommonOpt: wd None -> p +/- upd; else (1 - wd) * p +/- upd (not scaled by lr)
        if self.wd is None:
            return p + upd if upd_sign > 0 else p - upd
        return (1 - self.wd) * p + upd if upd_sign > 0 else (1 - self.wd) * p - upd

    def update(self, params, grads):
        lr = self.lr()
        hp = self.hp
        if self.kind in ("adam", "adamw"):
            self.step += 1
            t = self.step
            b1, b2, eps = hp.get("beta1", 0.9), hp.get("beta2", 0.999), hp.get("eps", 1e-8)
        for k in params:
            p, g = params[k], grads[k]
            if self.kind == "sgd":
                params[k] = self.decay(p, -1, lr * g)
            elif self.kind == "momentum":
                v = hp.get("momentum", 0.9) * self.slots[k + "_v"] - lr * g
                self.slots[k + "_v"] = v
                params[k] = self.decay(p, +1, v)
            elif self.kind == "nesterov":
                mu = hp.get("momentum", 0.9)
                v = mu * self.slots[k + "_v"] - lr * g
                self.slots[k + "_v"] = v
                params[k] = self.decay(p, +1, mu * v - lr * g)     # HEAD look-ahead (PR #868)
            elif self.kind == "adam":
                lr_t = lr / (1 - b1 ** t)
                lr_t = lr_t * np.sqrt(1 - b2 ** t)
                m = b1 * self.slots[k + "_m"] + (1 - b1) * g
                v = b2 * self.slots[k + "_v"] + (1 - b2) * g ** 2
                self.slots[k + "_m"], self.slots[k + "_v"] = m, v
                params[k] = self.decay(p, -1, lr_t * m / (np.sqrt(v) + eps))
            elif self.kind == "adamw":
                wd = 1e-2 if self.wd is None else self.wd          # AdamW's default
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                lr_t = lr * np.sqrt(bc2) / bc1
                if wd != 0:
                    p = p * (1 - lr * wd)                          # the un-corrected lr
                m = b1 * self.slots[k + "_m"] + (1 - b1) * g
                v = b2 * self.slots[k + "_v"] + (1 - b2) * g ** 2
                self.slots[k + "_m"], self.slots[k + "_v"] = m, v
                if hp.get("amsgrad"):
                    vmax = np.maximum(self.slots[k + "_vmax"], v)
                    self.slots[k + "_vmax"] = vmax
                    denom = np.sqrt(vmax) + eps
                else:
                    denom = np.sqrt(v) + eps
                params[k] = p - lr_t * m / denom
            elif self.kind == "rmsprop":
                rho, eps = hp.get("rho", 0.9), hp.get("epsilon", 1e-6)
                c = rho * self.slots[k + "_cache"] + (1 - rho) * g ** 2
                self.slots[k + "_cache"] = c
                params[k] = self.decay(p, -1, lr * g / np.sqrt(c + eps))
            elif self.kind == "adagrad":
                eps = hp.get("epsilon", 1e-6)
                c = self.slots[k + "_cache"] + g ** 2
                self.slots[k + "_cache"] = c
                params[k] = self.decay(p, -1, lr * g / np.sqrt(c + eps))
        self.lr.step_call()
        for k, v in self.slots.items():
            self.slot_max[k] = max(self.slot_max.get(k, 0.0), float(np.max(np.abs(v))))


# Each: name, kind, lr (number or scheduler factory), weight_decay, hyperparameters, epoch_every
# (step_epoch after every that many updates; 0 = never). The C test builds the same list.
CONFIGS = [
    ("sgd", "sgd", 0.1, None, {}, 0),
    ("sgd_wd", "sgd", 0.1, 0.05, {}, 0),
    ("momentum", "momentum", 0.05, None, {}, 0),
    ("momentum_wd", "momentum", 0.05, 0.02, {"momentum": 0.8}, 0),
    ("nesterov", "nesterov", 0.05, None, {}, 0),
    ("nesterov_wd", "nesterov", 0.05, 0.02, {"momentum": 0.7}, 0),
    ("adam", "adam", 0.1, None, {}, 0),
    ("adam_wd", "adam", 0.1, 0.01, {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6}, 0),
    ("adamw", "adamw", 0.1, None, {}, 0),
    ("adamw_ams", "adamw", 0.1, 0.05, {"amsgrad": True, "beta2": 0.9}, 0),
    ("adamw_nowd", "adamw", 0.1, 0.0, {"beta1": 0.5}, 0),
    ("rmsprop", "rmsprop", 0.01, None, {}, 0),
    ("rmsprop_wd", "rmsprop", 0.01, 0.01, {"rho": 0.5, "epsilon": 1e-4}, 0),
    ("adagrad", "adagrad", 0.3, None, {}, 0),
    ("adagrad_wd", "adagrad", 0.3, 0.02, {"epsilon": 1e-3}, 0),
    ("sgd_expdecay", "sgd", lambda: exponential_decay_lr(0.2, 4, 0.5), None, {}, 0),
    ("adam_steplr", "adam", lambda: step_lr(0.1, 2, 0.5), None, {}, 5),
]

# The fixed quadratic f(p) = sum_k 0.5 * sum(a_k * p_k^2) + b_k . p_k, grad a_k * p_k + b_k.
QUAD = {
    "p1": (np.array([[1.0, -2.0, 0.5], [3.0, -0.25, 1.5]]),        # initial value
           np.array([[0.5, 1.0, 2.0], [4.0, 0.1, 3.0]]),           # a
           np.array([[0.1, -0.2, 0.0], [0.3, 0.05, -0.4]])),        # b
    "p2": (np.array([0.75, -1.25, 2.0, -0.5]),
           np.array([1.5, 0.25, 0.8, 6.0]),
           np.array([-0.3, 0.2, 0.1, 0.0])),
}

# The tiny net: y = x @ W + b, loss = mean((y - target)^2) over all 5 x 2 entries.
NET_X = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [-1.0, 0.75, 1.0], [0.0, -0.5, -1.5], [2.0, 1.0, 0.5]])
NET_T = np.array([[1.0, -0.5], [0.25, 2.0], [-1.0, 0.5], [0.75, -1.25], [1.5, 0.0]])
NET_W0 = np.array([[0.2, -0.4], [0.6, 0.1], [-0.3, 0.5]])
NET_B0 = np.array([0.05, -0.1])


def quad_grads(params):
    return {k: QUAD[k][1] * params[k] + QUAD[k][2] for k in params}


def net_grads(params):
    y = NET_X @ params["W"] + params["b"]
    dy = 2.0 * (y - NET_T) / y.size
    return {"W": NET_X.T @ dy, "b": dy.sum(axis=0)}


def run(cfg, params, grad_fn):
    name, kind, lr, wd, hp, epoch_every = cfg
    opt = Opt(kind, lr() if callable(lr) else lr, wd, **hp)
    opt.register(params)
    traj = {k: [v.copy()] for k, v in params.items()}
    lrs = []
    for s in range(STEPS):
        lrs.append(opt.lr())
        opt.update(params, grad_fn(params))
        if epoch_every and (s + 1) % epoch_every == 0:
            opt.lr.step_epoch()
        for k in params:
            traj[k].append(params[k].copy())
    return traj, opt.slots, opt.slot_max, np.array(lrs)


def write_problem(path, title, init, grad_fn):
    with FixtureWriter(path, title + "\nGenerated by tests/gen_optim.py (NumPy float64, BrainPy 2.8.2 formulas).") as w:
        for k, v in init.items():
            w.add("init_" + k, v)
        for cfg in CONFIGS:
            params = {k: v.copy() for k, v in init.items()}
            traj, slots, slot_max, lrs = run(cfg, params, grad_fn)
            for k in init:
                w.add("%s_%s" % (cfg[0], k), np.stack(traj[k]))
            for sk, sv in slots.items():
                w.add("%s_slot_%s" % (cfg[0], sk), sv)
                w.add("%s_slotscale_%s" % (cfg[0], sk), slot_max[sk])
            w.add("%s_lr" % cfg[0], lrs)


def main():
    with FixtureWriter(os.path.join(DATA, "optim_schedulers.txt"),
                       "Learning rates of BrainPy 2.8.2's schedulers: value k = lr() after k steps\n"
                       "(step_epoch for epoch-based, step_call for call-based ones).\n"
                       "Generated by tests/gen_optim.py.") as w:
        for name, make in SCHEDULERS:
            w.add(name, sched_sequence(make()))

    quad_init = {k: v[0] for k, v in QUAD.items()}
    write_problem(os.path.join(DATA, "optim_quadratic.txt"),
                  "20-step trajectories (21 rows: initial value first) on the fixed quadratic;\n"
                  "final slot values; the lr of each update.", quad_init, quad_grads)
    write_problem(os.path.join(DATA, "optim_tinynet.txt"),
                  "20-step trajectories on a linear layer with MSE loss (x, target below); final slots; lrs.",
                  {"W": NET_W0, "b": NET_B0}, net_grads)
    with FixtureWriter(os.path.join(DATA, "optim_quadratic_coef.txt"),
                       "The quadratic's a and b, and the tiny net's data.") as w:
        for k, v in QUAD.items():
            w.add("a_" + k, v[1])
            w.add("b_" + k, v[2])
        w.add("net_x", NET_X)
        w.add("net_t", NET_T)

    # Every value just written must agree with the formulas written again,
    # independently, from the semantics (tests/ref_optim_spec.py).
    import ref_optim_spec
    if ref_optim_spec.main() != 0:
        raise SystemExit("gen_optim.py: the fixtures disagree with tests/ref_optim_spec.py")


if __name__ == "__main__":
    main()
