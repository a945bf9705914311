#!/usr/bin/python3
"""Writes the NIfTI fixtures of tests/test_nifti.c with nibabel (an independent
writer and reader: python3-nibabel, python3-numpy), into tests/data/nifti/:

  <case>.nii[.gz]      the files
  expected.txt         per case, as nibabel reads them back: one line
                       "case nx ny nz C sx sy sz source a00 .. a33" and one line of
                       the scaled voxel values in bpc's order (i, j, k, c), C order

Run: /usr/bin/python3 tests/gen_nifti.py
"""
import os
import numpy as np
import nibabel as nib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "nifti")


def rot_affine(spacing, offset):
    c, s = np.cos(0.3), np.sin(0.3)
    r = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag(spacing)
    a = np.eye(4)
    a[:3, :3] = r
    a[:3, 3] = offset
    return a


def cases():
    rng = np.random.default_rng(7)
    # int16 with a scale slope and intercept; sform (code 2) and a different qform (code 1)
    d = rng.integers(-300, 300, size=(5, 4, 3)).astype(np.int16)
    im = nib.Nifti1Image(d, rot_affine([1.5, 2.0, 2.5], [-10, 20, 5]))
    im.header.set_data_dtype(np.int16)
    im.header.set_slope_inter(0.5, -3.0)
    im.set_qform(np.diag([1.5, 2.0, 2.5, 1.0]), code=1)
    im.set_sform(rot_affine([1.5, 2.0, 2.5], [-10, 20, 5]), code=2)
    yield "int16_scaled.nii.gz", im, "sform"
    # 4-D uint8, only a qform
    d = rng.integers(0, 255, size=(3, 2, 2, 2)).astype(np.uint8)
    im = nib.Nifti1Image(d, None)
    im.set_qform(rot_affine([0.7, 0.8, 0.9], [1, 2, 3]), code=1)
    im.set_sform(None, code=0)
    yield "uint8_4d.nii", im, "qform"
    # big-endian float64, no form at all
    d = rng.normal(size=(2, 3, 4)) * 100
    hdr = nib.Nifti1Header(endianness=">")
    hdr.set_data_dtype(">f8")
    im = nib.Nifti1Image(d.astype(">f8"), None, header=hdr)
    im.set_qform(None, code=0)
    im.set_sform(None, code=0)
    im.header.set_zooms((1.25, 1.5, 1.75))
    yield "float64_bigendian.nii", im, "spacing"
    # NIfTI-2, float32, sform
    d = rng.normal(size=(4, 3, 2)).astype(np.float32)
    im = nib.Nifti2Image(d, rot_affine([1, 1, 2], [0, -5, 7]))
    im.set_sform(rot_affine([1, 1, 2], [0, -5, 7]), code=1)
    yield "float32_nifti2.nii.gz", im, "sform"
    # uint16 and int32, 2-D (nz = 1)
    d = rng.integers(0, 60000, size=(3, 5)).astype(np.uint16)
    im = nib.Nifti1Image(d, np.eye(4))
    yield "uint16_2d.nii", im, "sform"


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = []
    for name, im, source in cases():
        path = os.path.join(OUT, name)
        nib.save(im, path)
        back = nib.load(path)
        v = np.asarray(back.get_fdata(), dtype=np.float64)
        while v.ndim < 4:
            v = v[..., np.newaxis]
        hdr = back.header
        zooms = list(hdr.get_zooms())[:3] + [1.0] * (3 - min(3, len(hdr.get_zooms())))
        # what the file says (nibabel may set a form on its own when saving)
        source = "sform" if hdr["sform_code"] > 0 else "qform" if hdr["qform_code"] > 0 else "spacing"
        if source == "sform":
            aff = back.get_sform()
        elif source == "qform":
            aff = back.get_qform()
        else:
            aff = np.diag(zooms + [1.0])
        lines.append(" ".join([name] + [str(s) for s in v.shape] + ["%.17g" % z for z in zooms] + [source] +
                              ["%.17g" % a for a in aff.reshape(-1)]))
        lines.append(" ".join("%.9g" % x for x in v.reshape(-1)))  # C order of (i, j, k, c)
    # a truncated copy of an uncompressed file, and a file that is no NIfTI at all
    raw = open(os.path.join(OUT, "uint8_4d.nii"), "rb").read()
    open(os.path.join(OUT, "truncated.nii"), "wb").write(raw[:len(raw) - 5])
    open(os.path.join(OUT, "not_nifti.nii"), "wb").write(b"this is not a NIfTI header" * 20)
    # a float64 voxel beyond float32's range
    big = np.ones((2, 2, 2))
    big[1, 0, 1] = 1e300
    nib.save(nib.Nifti1Image(big, np.eye(4)), os.path.join(OUT, "float64_huge.nii"))
    # RGB data: a datatype bpc does not read
    rgb = np.zeros((2, 2, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), os.path.join(OUT, "rgb.nii"))
    with open(os.path.join(OUT, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
