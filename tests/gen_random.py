#!/usr/bin/python3
"""Reference numbers for tests/test_random.c, from an independent Python
implementation of splitmix64 and xoshiro256** (Blackman & Vigna's published
algorithms). Run with Debian's python: /usr/bin/python3 tests/gen_random.py
and paste its output into test_random.c if the generator ever changes."""
import math

M = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return x, z ^ (z >> 31)


def seed(s):
    st = []
    for _ in range(4):
        s, v = splitmix64(s)
        st.append(v)
    return st


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M


def nxt(s):
    out = (rotl((s[1] * 5) & M, 7) * 9) & M
    t = (s[1] << 17) & M
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = rotl(s[3], 45)
    return out


def uniform(s):
    return (nxt(s) >> 11) * 2.0 ** -53


def normal(s):
    u1 = 1.0 - uniform(s)
    u2 = uniform(s)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)


def words(xs):
    return ", ".join("0x%016xULL" % x for x in xs)


print("/* seed 1234567: state */ {%s}" % words(seed(1234567)))
s = seed(42)
print("/* seed 42: state */ {%s}" % words(s))
print("/* seed 42: next x5 */ {%s}" % words([nxt(s) for _ in range(5)]))
s = [1, 2, 3, 4]
print("/* state {1,2,3,4}: next x5 */ {%s}" % words([nxt(s) for _ in range(5)]))
s = seed(7)
print("/* seed 7: uniform x3 */ {%s}" % ", ".join(repr(uniform(s)) for _ in range(3)))
s = seed(7)
print("/* seed 7: normal x3 */ {%s}" % ", ".join(repr(normal(s)) for _ in range(3)))
