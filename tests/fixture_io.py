"""Writes the text fixtures that tests/fixture.h reads (see its format).

Used by the tests/gen_*.py generators, which run under Debian's python3
(/usr/bin/python3, with python3-torch and python3-numpy); the C tests never
need Python.
"""
import numpy as np


class FixtureWriter:
    def __init__(self, path, comment=""):
        self.f = open(path, "w")
        if comment:
            for line in comment.splitlines():
                self.f.write("# " + line + "\n")

    def add(self, name, array):
        a = np.asarray(array, dtype=np.float64)
        self.f.write("tensor %s %d %s\n" % (name, a.ndim, " ".join(str(d) for d in a.shape)))
        flat = a.reshape(-1)
        for i in range(0, flat.size, 8):
            self.f.write(" ".join("%.17g" % v for v in flat[i:i + 8]) + "\n")

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
