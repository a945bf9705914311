#!/usr/bin/python3
"""tests/gen_checkpoint.py — fixtures for tests/test_checkpoint.c, written by NumPy
and by hand-built safetensors/JSON, plus the fuzz seed corpora.

Run with Debian's python (numpy; no torch needed), from the repository root:
    /usr/bin/python3 tests/gen_checkpoint.py

Writes (all small):
  tests/data/ckpt_numpy_savez.npz          np.savez of the reference state REF
  tests/data/ckpt_numpy_compressed.npz     np.savez_compressed of REF
  tests/data/ckpt_numpy_layouts.npz        big-endian '>f8', '>i4', Fortran-ordered
                                           and NPY 2.0 members (see LAYOUTS)
  tests/data/ckpt_python.safetensors       REF as the safetensors reference layout
                                           (sorted keys, no bpc metadata, no checksum)
  tests/data/ckpt_python_bpc.safetensors   REF with bpc's __metadata__ and its
                                           data_crc32 from Python's zlib.crc32
  tests/data/ckpt_python.json              REF in bpc's JSON layout, by json.dumps, with
                                           data_crc32 computed here (json_crc)
  tests/data/ckpt_python_v1.json           REF as a version 1 JSON file (no checksum)
  tests/data/ckpt_bad_<defect>.npz         one defect each (see BAD_NPZ), for the
                                           error tests
  tests/data/ckpt_bomb.npz                 ~260 KB claiming a 256 MiB member (write_bomb)
  io/fuzz/corpus/<format>/seed_*        the files above, as fuzz seeds

The C test rebuilds REF from the same formulas (ref_state() in
tests/test_checkpoint.c) and compares bit for bit.
"""
import io
import json
import os
import struct
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
CORPUS = os.path.join(HERE, "..", "io", "fuzz", "corpus")


def ref_state():
    """The reference state: every dtype, 0-d, empty, 8-d, special floats."""
    f32_special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, 3.4028234663852886e38,
                            1.17549435e-38, 0.1], dtype=np.float32)
    return {
        "Net0.w": (np.arange(6, dtype=np.float32).reshape(2, 3) * np.float32(0.25)
                   - np.float32(0.5)),
        "Net0.special": f32_special,
        "Net0.count": np.array(42, dtype=np.int64),
        "Net0.mask": np.array([0, 1, 255], dtype=np.uint8),
        "Net0.idx": np.array([[-2147483648, 2147483647]], dtype=np.int32),
        "Net0.x64": np.array([np.pi, -1e-300, 1e300, 5e-324], dtype=np.float64),
        "Net0.empty": np.zeros((0, 3), dtype=np.float32),
        "Net0.deep": np.arange(1, 257, dtype=np.float32).reshape(2, 2, 2, 2, 2, 2, 2, 2) / np.float32(8),
    }


def layouts():
    """Members that exercise byte order, Fortran order and NPY 2.0."""
    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4) * 0.5 - 3.0
    return {
        "be_f8": a.astype(">f8"),                                    # big-endian, C order
        "be_i4": np.array([1, -2, 70000], dtype=">i4"),
        "fortran": np.asfortranarray(a),                             # fortran_order True
        "fortran_be": np.asfortranarray(a.astype(">f4")),
    }


def npy_v2_bytes(arr):
    """An NPY 2.0 member (4-byte header length), as numpy writes for huge headers."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=(2, 0))
    return buf.getvalue()


ST_NAMES = {np.float32: "F32", np.float64: "F64", np.int32: "I32", np.int64: "I64", np.uint8: "U8"}


def safetensors_bytes(state, bpc_meta):
    keys = sorted(state)  # the reference implementation orders by name
    header, data, off = {}, b"", 0
    for k in keys:
        a = np.asarray(state[k])
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes(order="C")
        header[k] = {"dtype": ST_NAMES[a.dtype.type], "shape": list(a.shape),
                     "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    if bpc_meta:
        header = {"__metadata__": {"format": "bpc", "version": "1",
                                   "data_crc32": "%08x" % zlib.crc32(data)}, **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def json_crc(state):
    """data_crc32 of a JSON checkpoint (io/bpc/checkpoint.h): per entry, the key, NUL, the
    dtype name, NUL, ndim and the dims as int64 LE, the values LE with NaN as the positive
    quiet NaN."""
    crc = 0
    for k, a in state.items():
        a = np.asarray(a)
        crc = zlib.crc32(k.encode() + b"\0" + str(a.dtype).encode() + b"\0", crc)
        crc = zlib.crc32(struct.pack("<%dq" % (a.ndim + 1), a.ndim, *a.shape), crc)
        v = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype.kind == "f":
            v = v.copy()
            v[np.isnan(v)] = np.nan
        crc = zlib.crc32(v.tobytes(order="C"), crc)
    return "%08x" % crc


def json_bytes(state, version=2):
    def enc(a):
        if a.dtype.kind == "f":
            out = []
            for v in a.ravel().tolist():
                if v != v:
                    out.append("NaN")
                elif v in (float("inf"), float("-inf")):
                    out.append("Infinity" if v > 0 else "-Infinity")
                else:
                    out.append(v)  # repr of the double: exact for float32 and float64
            return out
        return a.ravel().tolist()
    doc = {"format": "bpc", "version": version,
           "tensors": {k: {"dtype": str(a.dtype), "shape": list(a.shape), "data": enc(a)}
                       for k, a in state.items()}}
    if version >= 2:
        doc["data_crc32"] = json_crc(state)
    return json.dumps(doc, indent=1).encode()


def npy_raw(header, data, version=b"\x01\x00"):
    """An NPY member with a hand-written header dict text (padded as numpy does)."""
    text = header.encode("latin1")
    total = -(-(10 + len(text) + 1) // 64) * 64
    text = text + b" " * (total - 10 - len(text) - 1) + b"\n"
    return b"\x93NUMPY" + version + struct.pack("<H", len(text)) + text + data


def zip_of(members, method=None):
    import warnings
    import zipfile
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of one fixture
        with zipfile.ZipFile(buf, "w", method or zipfile.ZIP_STORED) as z:
            for name, blob in members:
                z.writestr(name, blob)
    return buf.getvalue()


def npy_of(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr)
    return buf.getvalue()


F4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
TWO = np.array([1.0, 2.0], dtype=np.float32).tobytes()


def bad_npz():
    """Each defect the npz reader must reject; the C test knows the message of each."""
    import zipfile
    good = npy_raw(F4, TWO)
    crc = bytearray(zip_of([("a.npy", good)]))
    crc[crc.index(TWO) + 1] ^= 0x10            # data changed, CRC not updated
    return {
        "not_npy": zip_of([("a.txt", b"hello")]),
        "magic": zip_of([("a.npy", b"\x93NUMPX" + good[6:])]),
        "version": zip_of([("a.npy", npy_raw(F4, TWO, b"\x04\x00"))]),
        "complex": zip_of([("a.npy", npy_of(np.array([1j], dtype=np.complex64)))]),
        "bool": zip_of([("a.npy", npy_of(np.array([True, False])))]),
        "size": zip_of([("a.npy", npy_raw(F4.replace("(2,)", "(3,)"), TWO))]),
        "trailing": zip_of([("a.npy", good + b"\0\0\0\0")]),
        "syntax": zip_of([("a.npy", npy_raw(F4[:-1], TWO))]),
        "extra_key": zip_of([("a.npy", npy_raw(F4[:-1] + "'extra': 1, }", TWO))]),
        "negative": zip_of([("a.npy", npy_raw(F4.replace("(2,)", "(-2,)"), TWO))]),
        "header_len": zip_of([("a.npy", good[:8] + b"\xff\x7f" + good[10:])]),
        "duplicate": zip_of([("a.npy", good), ("a.npy", good)]),
        "bzip2": zip_of([("a.npy", good)], zipfile.ZIP_BZIP2),
        "crc": bytes(crc),
        "not_zip": b"PK\x03\x04 this is not a zip archive at all",
        "key": zip_of([("caf\u00e9.npy", good)]),
    }


BOMB_ELEMS = 1 << 26   # float32: 256 MiB


def write_bomb(path):
    """A small npz (~260 KB) whose deflate member "M.w.npy" inflates to a float32 array of
    BOMB_ELEMS zeros (256 MiB): what a loader must refuse without allocating it."""
    import zipfile
    hdr = npy_raw("{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % BOMB_ELEMS, b"")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        zi = zipfile.ZipInfo("M.w.npy", date_time=(1980, 1, 1, 0, 0, 0))
        zi.compress_type = zipfile.ZIP_DEFLATED
        with z.open(zi, "w") as f:
            f.write(hdr)
            chunk = bytes(1 << 20)
            for _ in range(BOMB_ELEMS * 4 // len(chunk)):
                f.write(chunk)


def write(path, blob):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(blob)


def main():
    ref = ref_state()
    npz = os.path.join(DATA, "ckpt_numpy_savez.npz")
    np.savez(npz, **ref)
    npzc = os.path.join(DATA, "ckpt_numpy_compressed.npz")
    np.savez_compressed(npzc, **ref)

    lay = os.path.join(DATA, "ckpt_numpy_layouts.npz")
    np.savez(lay, **layouts())
    import zipfile
    with zipfile.ZipFile(lay, "a") as z:   # one NPY 2.0 member next to np.savez's
        z.writestr("v2.npy", npy_v2_bytes(np.array([[7, 8, 9]], dtype=np.int64)))

    write(os.path.join(DATA, "ckpt_python.safetensors"), safetensors_bytes(ref, False))
    write(os.path.join(DATA, "ckpt_python_bpc.safetensors"), safetensors_bytes(ref, True))
    write(os.path.join(DATA, "ckpt_python.json"), json_bytes(ref))
    write(os.path.join(DATA, "ckpt_python_v1.json"), json_bytes(ref, version=1))
    write_bomb(os.path.join(DATA, "ckpt_bomb.npz"))
    for name, blob in bad_npz().items():
        write(os.path.join(DATA, "ckpt_bad_%s.npz" % name), blob)

    small = {"a": np.array([1.0, 2.0], dtype=np.float32), "n": np.array(3, dtype=np.int64)}
    seeds = {
        "safetensors": [safetensors_bytes(ref, True), safetensors_bytes(ref, False),
                        safetensors_bytes(small, True)],
        "json": [json_bytes(ref), json_bytes(small), json_bytes(small, version=1)],
    }
    for fmt, blobs in seeds.items():
        for i, b in enumerate(blobs):
            write(os.path.join(CORPUS, fmt, "seed_%d" % i), b)
    buf = io.BytesIO()
    np.savez(buf, **small)
    write(os.path.join(CORPUS, "npz", "seed_0"), buf.getvalue())
    buf = io.BytesIO()
    np.savez_compressed(buf, **small)
    write(os.path.join(CORPUS, "npz", "seed_1"), buf.getvalue())
    with open(lay, "rb") as f:
        write(os.path.join(CORPUS, "npz", "seed_2"), f.read())


if __name__ == "__main__":
    main()
