#!/usr/bin/python3
"""An independent check of tests/data/optim_*.txt: BrainPy 2.8.2's optimizer
update rules and learning-rate schedules written again, from the written
semantics (the optimizer and scheduler section of the BrainPy semantics notes
bpc follows), in plain Python floats (no NumPy, no shared code with
tests/gen_optim.py or optim/*.c), then compared entry by entry with the
committed fixtures that the C tests read.

Run: /usr/bin/python3 tests/ref_optim_spec.py   (exit status 1 on any disagreement)

Tolerance: both sides are float64 with the same formulas; only the operation
order inside a formula and the net's dot products may differ, so every value
must agree to 1e-13 of the scale its tensor lives at (rtol 1e-13 for a
learning rate).
"""
import math
import os
import sys
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
TOL = 1e-13


# ------------------------------------------------------------ fixture reading

def read_fixture(path):
    """name -> (shape, flat list of floats)."""
    out, name, shape, vals = {}, None, None, []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            w = line.split()
            if w[0] == "tensor":
                if name is not None:
                    out[name] = (shape, vals)
                name, nd = w[1], int(w[2])
                shape, vals = tuple(int(d) for d in w[3:3 + nd]), []
            else:
                vals.extend(float(v) for v in w)
    if name is not None:
        out[name] = (shape, vals)
    return out


# ---------------------------------------------------------------- schedules
# Each is lr(i): the value of __call__ at index i. Epoch-based ones are read
# at i = last_epoch + 1, call-based ones at i = last_call + 1.

def sched_step(lr, step_size, gamma):
    return lambda i: lr * gamma ** math.floor(i / step_size)


def sched_multi_step(lr, milestones, gamma):
    return lambda i: lr * gamma ** len([m for m in milestones if m < i])   # 2.8.2: strict <


def sched_exponential(lr, gamma):
    return lambda i: lr * gamma ** i


def sched_cosine(lr, t_max, eta_min):
    return lambda i: eta_min + (lr - eta_min) * (1 + math.cos(math.pi * i / t_max)) / 2


def sched_exp_decay(lr, steps, rate):
    return lambda i: lr * rate ** (i / steps)


def sched_inv_time(lr, steps, rate, staircase):
    if staircase:
        return lambda i: lr / (1 + rate * math.floor(i / steps))
    return lambda i: lr / (1 + rate * i / steps)


def sched_poly(lr, steps, final_lr, power):
    return lambda i: (1 - min(i, steps) / steps) ** power * (lr - final_lr) + final_lr


def sched_piecewise(boundaries, values):
    return lambda i: values[len([b for b in boundaries if i > b])]


def warm_restart_terms(i, per_epoch, t0, tmult):
    """(T_cur, T_i) with the epoch an exact rational i / per_epoch and n the
    exact value of floor(log(epoch/T_0*(T_mult-1)+1)/log(T_mult)): the largest
    n with T_0*(T_mult^n - 1)/(T_mult - 1) <= epoch."""
    e = Fraction(i, per_epoch)
    if e < t0:
        return e, t0
    if tmult == 1:
        return e - t0 * math.floor(e / t0), t0
    n = 0
    while t0 * (tmult ** (n + 1) - 1) <= e * (tmult - 1):
        n += 1
    return e - Fraction(t0 * (tmult ** n - 1), tmult - 1), t0 * tmult ** n


def sched_warm_restarts(lr, per_epoch, t0, tmult, eta_min):
    def f(i):
        t_cur, t_i = warm_restart_terms(i, per_epoch, t0, tmult)
        return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * float(t_cur) / t_i)) / 2
    return f


def warm_restarts_float_n(i, per_epoch, t0, tmult):
    """n as the semantics write it, in float64 logs (for the report only)."""
    e = i / per_epoch
    return math.floor(math.log(e / t0 * (tmult - 1) + 1) / math.log(tmult))


# (fixture name, schedule, call-based, first index = start counter + 1)
SCHEDULES = [
    ("constant", lambda i: 0.3, False, 0),
    ("step_lr", sched_step(0.1, 3, 0.5), False, 0),
    ("step_lr_from4", sched_step(0.1, 3, 0.5), False, 5),
    ("multi_step_lr", sched_multi_step(0.1, [3, 7, 7, 12], 0.3), False, 0),
    ("exponential_lr", sched_exponential(0.1, 0.9), False, 0),
    ("cosine_annealing_lr", sched_cosine(0.1, 10, 0.001), False, 0),
    ("exponential_decay_lr", sched_exp_decay(0.1, 5, 0.5), True, 0),
    ("inverse_time_decay_lr", sched_inv_time(0.1, 4, 0.5, False), True, 0),
    ("inverse_time_decay_lr_stair", sched_inv_time(0.1, 4, 0.5, True), True, 0),
    ("polynomial_decay_lr", sched_poly(0.1, 10, 0.01, 2.0), True, 0),
    ("piecewise_constant_lr", sched_piecewise([5, 10, 20], [0.1, 0.05, 0.01, 0.001]), True, 0),
    ("warm_restarts_mult2", sched_warm_restarts(0.1, 2, 2, 2, 0.001), True, 0),
    ("warm_restarts_mult1", sched_warm_restarts(0.1, 1, 5, 1, 0.0), True, 0),
    ("warm_restarts_from3", sched_warm_restarts(0.1, 3, 1, 3, 0.01), True, 4),
]


# --------------------------------------------------------------- optimizers

class Counter:
    """A scheduler's state: the optimizer reads lr(i) before each update and
    then calls step_call (moves last_call of call-based schedules only)."""

    def __init__(self, fn, call_based):
        self.fn, self.call_based, self.last_epoch, self.last_call = fn, call_based, -1, -1

    def value(self):
        return self.fn(1 + (self.last_call if self.call_based else self.last_epoch))


def rule_update(kind, hp, wd, lr, t, p, g, slots):
    """One parameter's update per the semantics' table; p, g, slot lists are
    float lists, changed in place. wd None = no weight decay."""
    def decayed(x):
        return x if wd is None else (1 - wd) * x
    for j in range(len(p)):
        if kind == "sgd":
            p[j] = decayed(p[j]) - lr * g[j]
        elif kind in ("momentum", "nesterov"):
            mu = hp["momentum"]
            v = mu * slots["_v"][j] - lr * g[j]
            slots["_v"][j] = v
            upd = v if kind == "momentum" else mu * v - lr * g[j]
            p[j] = decayed(p[j]) + upd
        elif kind == "adam":
            b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
            lr_t = lr / (1 - b1 ** t) * math.sqrt(1 - b2 ** t)
            m = b1 * slots["_m"][j] + (1 - b1) * g[j]
            v = b2 * slots["_v"][j] + (1 - b2) * g[j] ** 2
            slots["_m"][j], slots["_v"][j] = m, v
            p[j] = decayed(p[j]) - lr_t * m / (math.sqrt(v) + eps)
        elif kind == "adamw":
            b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            lr_t = lr * math.sqrt(bc2) / bc1
            x = p[j] * (1 - lr * wd) if wd != 0 else p[j]
            m = b1 * slots["_m"][j] + (1 - b1) * g[j]
            v = b2 * slots["_v"][j] + (1 - b2) * g[j] ** 2
            slots["_m"][j], slots["_v"][j] = m, v
            if hp["amsgrad"]:
                slots["_vmax"][j] = max(slots["_vmax"][j], v)
                denom = math.sqrt(slots["_vmax"][j]) + eps
            else:
                denom = math.sqrt(v) + eps
            p[j] = x - lr_t * m / denom
        elif kind == "rmsprop":
            c = hp["rho"] * slots["_cache"][j] + (1 - hp["rho"]) * g[j] ** 2
            slots["_cache"][j] = c
            p[j] = decayed(p[j]) - lr * g[j] / math.sqrt(c + hp["epsilon"])
        elif kind == "adagrad":
            c = slots["_cache"][j] + g[j] ** 2
            slots["_cache"][j] = c
            p[j] = decayed(p[j]) - lr * g[j] / math.sqrt(c + hp["epsilon"])


SLOT_NAMES = {"sgd": [], "momentum": ["_v"], "nesterov": ["_v"], "adam": ["_m", "_v"], "adamw": ["_m", "_v"],
              "rmsprop": ["_cache"], "adagrad": ["_cache"]}

# The constructors' defaults, per the semantics' table and its notes.
DEFAULTS = {"momentum": {"momentum": 0.9}, "nesterov": {"momentum": 0.9},
            "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
            "adamw": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "amsgrad": False},
            "rmsprop": {"epsilon": 1e-6, "rho": 0.9}, "adagrad": {"epsilon": 1e-6}, "sgd": {}}

# The test configurations (inputs only): name, kind, lr or (schedule, call-based),
# weight_decay ("default": the class default, None for all but AdamW's 1e-2),
# hyperparameters over the defaults, step_epoch every that many updates (0: never).
CONFIGS = [
    ("sgd", "sgd", 0.1, "default", {}, 0),
    ("sgd_wd", "sgd", 0.1, 0.05, {}, 0),
    ("momentum", "momentum", 0.05, "default", {}, 0),
    ("momentum_wd", "momentum", 0.05, 0.02, {"momentum": 0.8}, 0),
    ("nesterov", "nesterov", 0.05, "default", {}, 0),
    ("nesterov_wd", "nesterov", 0.05, 0.02, {"momentum": 0.7}, 0),
    ("adam", "adam", 0.1, "default", {}, 0),
    ("adam_wd", "adam", 0.1, 0.01, {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6}, 0),
    ("adamw", "adamw", 0.1, "default", {}, 0),
    ("adamw_ams", "adamw", 0.1, 0.05, {"amsgrad": True, "beta2": 0.9}, 0),
    ("adamw_nowd", "adamw", 0.1, 0.0, {"beta1": 0.5}, 0),
    ("rmsprop", "rmsprop", 0.01, "default", {}, 0),
    ("rmsprop_wd", "rmsprop", 0.01, 0.01, {"rho": 0.5, "epsilon": 1e-4}, 0),
    ("adagrad", "adagrad", 0.3, "default", {}, 0),
    ("adagrad_wd", "adagrad", 0.3, 0.02, {"epsilon": 1e-3}, 0),
    ("sgd_expdecay", "sgd", (sched_exp_decay(0.2, 4, 0.5), True), "default", {}, 0),
    ("adam_steplr", "adam", (sched_step(0.1, 2, 0.5), False), "default", {}, 5),
]


def run_config(cfg, init, grad_fn, steps):
    name, kind, lr, wd, over, epoch_every = cfg
    hp = dict(DEFAULTS[kind], **over)
    if wd == "default":
        wd = 1e-2 if kind == "adamw" else None
    sched = Counter(lr[0], lr[1]) if isinstance(lr, tuple) else Counter(lambda i, c=lr: c, False)
    params = {k: list(v) for k, v in init.items()}
    names = SLOT_NAMES[kind] + (["_vmax"] if kind == "adamw" and hp["amsgrad"] else [])
    slots = {k: {s: [0.0] * len(v) for s in names} for k, v in init.items()}
    scale = {}
    traj = {k: [list(v)] for k, v in init.items()}
    lrs, t = [], 0
    for s in range(steps):
        cur = sched.value()
        lrs.append(cur)
        grads = grad_fn(params)
        if kind in ("adam", "adamw"):
            t += 1                       # 2.8.2: the optimizer's own step, 1 on the first update
        for k in params:
            rule_update(kind, hp, wd, cur, t, params[k], grads[k], slots[k])
            traj[k].append(list(params[k]))
            for sn, sv in slots[k].items():
                scale[k + sn] = max(scale.get(k + sn, 0.0), max(abs(x) for x in sv))
        if sched.call_based:
            sched.last_call += 1         # step_call at the end of update
        if epoch_every and (s + 1) % epoch_every == 0:
            sched.last_epoch += 1
    return traj, slots, scale, lrs


# ------------------------------------------------------------------ problems

def quad_problem(coef):
    a = {k: coef["a_" + k][1] for k in ("p1", "p2")}
    b = {k: coef["b_" + k][1] for k in ("p1", "p2")}
    return lambda p: {k: [a[k][j] * p[k][j] + b[k][j] for j in range(len(p[k]))] for k in p}


def net_problem(coef):
    x, t = coef["net_x"][1], coef["net_t"][1]      # (5, 3) and (5, 2), row-major

    def grads(p):
        W, bias = p["W"], p["b"]                    # (3, 2) row-major, (2,)
        dy = [[0.0] * 2 for _ in range(5)]
        for r in range(5):
            for o in range(2):
                y = sum(x[r * 3 + i] * W[i * 2 + o] for i in range(3)) + bias[o]
                dy[r][o] = 2 * (y - t[r * 2 + o]) / 10
        dW = [sum(x[r * 3 + i] * dy[r][o] for r in range(5)) for i in range(3) for o in range(2)]
        db = [sum(dy[r][o] for r in range(5)) for o in range(2)]
        return {"W": dW, "b": db}
    return grads


# ------------------------------------------------------------------ checking

class Report:
    def __init__(self):
        self.bad, self.checked = [], 0

    def close(self, what, got, want, scale):
        self.checked += 1
        if not abs(got - want) <= TOL * scale:
            self.bad.append("%s: fixture %.17g, spec %.17g (|diff|/scale %.3g)" %
                            (what, got, want, abs(got - want) / scale))


def check_schedules(rep):
    fx = read_fixture(os.path.join(DATA, "optim_schedulers.txt"))
    for name, fn, _, first in SCHEDULES:
        _, vals = fx[name]
        for k, got in enumerate(vals):
            want = fn(first + k)
            rep.close("%s[%d]" % (name, k), got, want, abs(want))


def check_problem(rep, path, init_names, grad_fn):
    fx = read_fixture(os.path.join(DATA, path))
    init = {k: fx["init_" + k][1] for k in init_names}
    for cfg in CONFIGS:
        name = cfg[0]
        shape, _ = fx["%s_%s" % (name, init_names[0])]
        steps = shape[0] - 1
        traj, slots, scale, lrs = run_config(cfg, init, grad_fn, steps)
        for s, got in enumerate(fx[name + "_lr"][1]):
            rep.close("%s lr[%d]" % (name, s), got, lrs[s], abs(lrs[s]))
        for k in init_names:
            flat = [x for row in traj[k] for x in row]
            ref = fx["%s_%s" % (name, k)][1]
            sc = max(max(abs(x) for x in flat), 1e-30)
            for j, (g, w) in enumerate(zip(ref, flat)):
                rep.close("%s %s traj[%d]" % (name, k, j), g, w, sc)
            for sn, sv in slots[k].items():
                key = "%s_slot_%s%s" % (name, k, sn)
                if key not in fx:
                    rep.bad.append("%s: missing in the fixture" % key)
                    continue
                for j, (g, w) in enumerate(zip(fx[key][1], sv)):
                    rep.close("%s[%d]" % (key, j), g, w, max(scale[k + sn], 1e-30))
        extra = [n for n in fx if n.startswith(name + "_slot_") and
                 n[len(name) + 6:] not in {k + sn for k in init_names for sn in slots[k]}]
        for n in extra:
            rep.bad.append("%s: in the fixture, not a slot of %s" % (n, cfg[1]))


def warm_restart_float_log_notes():
    """Where the float64-log n of the semantics differs from the exact n, over
    the schedules tested here and the first 2000 calls (informational)."""
    notes = []
    for per, t0, tm in ((2, 2, 2), (3, 1, 3), (3, 2, 2), (1, 1, 2), (1, 3, 10), (1, 1, 10)):
        for i in range(t0 * per, 2000):
            exact = warm_restart_terms(i, per, t0, tm)[1]
            n = warm_restarts_float_n(i, per, t0, tm)
            if t0 * tm ** n != exact:
                notes.append("per_epoch %d T_0 %d T_mult %d, call %d: float log gives T_i %d, exact %d" %
                             (per, t0, tm, i, t0 * tm ** n, exact))
    return notes


def main():
    rep = Report()
    check_schedules(rep)
    coef = read_fixture(os.path.join(DATA, "optim_quadratic_coef.txt"))
    check_problem(rep, "optim_quadratic.txt", ["p1", "p2"], quad_problem(coef))
    check_problem(rep, "optim_tinynet.txt", ["W", "b"], net_problem(coef))
    for line in warm_restart_float_log_notes():
        print("note:", line)
    for line in rep.bad:
        print("DISAGREE", line)
    print("%d values checked, %d disagree" % (rep.checked, len(rep.bad)))
    return 1 if rep.bad else 0


if __name__ == "__main__":
    sys.exit(main())
