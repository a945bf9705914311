#!/usr/bin/python3
"""Writes tests/data/seg_loss.txt: PyTorch reference values for bpc's
segmentation losses (autograd/ops_seg_loss.c), channels-last.

- cross-entropy: torch.nn.functional.cross_entropy with weight and
  ignore_index on the channels-first permutation of the logits;
- soft Dice: MONAI's DiceLoss(softmax=True, to_onehot_y=True) formula written
  here in torch (MONAI is not a Debian package), differentiated by autograd;
- Dice score: from the argmax, in numpy.

Run: /usr/bin/python3 tests/gen_seg_loss.py  (python3-torch, python3-numpy)
"""
import os
import numpy as np
import torch
import torch.nn.functional as F
from fixture_io import FixtureWriter

HERE = os.path.dirname(os.path.abspath(__file__))
IGNORE = 255


def dice_loss(logits, labels, C, sn, sd, include_background, batch, ignore):
    p = torch.softmax(logits, dim=-1)
    valid = torch.ones_like(labels, dtype=torch.float64) if ignore is None else (labels != ignore).double()
    lab = torch.where(labels == (ignore if ignore is not None else -12345), torch.zeros_like(labels), labels)
    q = F.one_hot(lab, C).double() * valid[..., None]
    p = p * valid[..., None]
    dims = tuple(range(0 if batch else 1, logits.dim() - 1))
    inter = (p * q).sum(dim=dims)
    s = (p + q).sum(dim=dims)
    d = 1 - (2 * inter + sn) / (s + sd)
    if not include_background:
        d = d[..., 1:]
    return d.mean()


def main():
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(5)
    with FixtureWriter(os.path.join(HERE, "data", "seg_loss.txt"),
                       "PyTorch %s reference values for tests/test_seg_loss.c (tests/gen_seg_loss.py)" %
                       torch.__version__) as w:
        # cross-entropy: (B, H, W, D, C) = (2, 3, 2, 2, 4), weights, an ignore label
        shape = (2, 3, 2, 2)
        C = 4
        logits = (torch.randn(*shape, C, generator=g, dtype=torch.float64) * 2)
        labels = torch.randint(0, C, shape, generator=g)
        labels[0, 1, 0, 1] = IGNORE
        labels[1, 2, 1, 0] = IGNORE
        weight = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
        for name, wt, ign in [("ce_w_ignore", weight, IGNORE), ("ce_plain", None, None)]:
            x = logits.clone().requires_grad_(True)
            lab = labels if ign is not None else torch.where(labels == IGNORE, torch.zeros_like(labels), labels)
            loss = F.cross_entropy(x.permute(0, 4, 1, 2, 3), lab, weight=wt,
                                   ignore_index=ign if ign is not None else -100)
            loss.backward()
            w.add(name + "_logits", logits.numpy())
            w.add(name + "_labels", lab.numpy())
            w.add(name + "_loss", loss.detach().numpy())
            w.add(name + "_grad", x.grad.numpy())
        w.add("ce_weight", weight.numpy())
        # soft Dice: (B, H, W, D, C) = (2, 3, 3, 2, 3)
        shape = (2, 3, 3, 2)
        C = 3
        logits = torch.randn(*shape, C, generator=g, dtype=torch.float64) * 1.5
        labels = torch.randint(0, C, shape, generator=g)
        labels[1] = torch.where(labels[1] == 2, torch.ones_like(labels[1]), labels[1])  # class 2 absent in sample 1
        labels_ign = labels.clone()
        labels_ign[0, 0, 0, 0] = IGNORE
        labels_ign[1, 2, 2, 1] = IGNORE
        cases = [("dice_default", labels, 1e-5, 1e-5, True, False, None),
                 ("dice_nobg_batch", labels, 1e-5, 1e-5, False, True, None),
                 ("dice_smooth_ignore", labels_ign, 1.0, 1.0, True, False, IGNORE)]
        for name, lab, sn, sd, bg, batch, ign in cases:
            x = logits.clone().requires_grad_(True)
            loss = dice_loss(x, lab, C, sn, sd, bg, batch, ign)
            loss.backward()
            w.add(name + "_logits", logits.numpy())
            w.add(name + "_labels", lab.numpy())
            w.add(name + "_loss", loss.detach().numpy())
            w.add(name + "_grad", x.grad.numpy())
        # Dice score of the argmax, per class (labels_ign, ignored voxels skipped)
        pred = logits.argmax(dim=-1).numpy()
        lab = labels_ign.numpy()
        m = lab != IGNORE
        score = []
        for c in range(C):
            a, b = (pred == c) & m, (lab == c) & m
            den = a.sum() + b.sum()
            score.append(2.0 * (a & b).sum() / den if den else np.nan)
        w.add("score_logits", logits.numpy())
        w.add("score_labels", lab)
        w.add("score_dice", np.array(score))


if __name__ == "__main__":
    main()
