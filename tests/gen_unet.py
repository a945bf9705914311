#!/usr/bin/python3
"""Writes tests/data/unet.txt: a PyTorch U-Net equal in structure to bpc's
(models/bpc/unet.h), its parameters in bpc's layout keyed by bpc's relative
var paths ("enc0.conv1.w"), an input, the output, and the gradients of
sum(dy * y) for a random dy. Three nets: instance norm, batch norm in
training mode, and instance norm with transposed-convolution up-sampling. Run: /usr/bin/python3 tests/gen_unet.py (python3-torch)."""
import os
import torch
import torch.nn as nn
from fixture_io import FixtureWriter

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = torch.Generator().manual_seed(21)


class Block(nn.Module):
    def __init__(self, cin, cout, norm, slope):
        super().__init__()
        mk = (lambda c: nn.GroupNorm(c, c)) if norm == "instance" else (lambda c: nn.BatchNorm3d(c))
        self.conv1, self.norm1 = nn.Conv3d(cin, cout, 3, padding=1), mk(cout)
        self.conv2, self.norm2 = nn.Conv3d(cout, cout, 3, padding=1), mk(cout)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x):
        x = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(x)))


class UNet(nn.Module):
    """enc0 Block(cin, f); enc<l> MaxPool(2), Block(f 2^(l-1), f 2^l); dec<l> trilinear x2,
    cat([up, skip]), Block(3 f 2^l, f 2^l); head Conv3d 1x1x1."""

    def __init__(self, cin, k, depth, f, norm, slope, up="trilinear"):
        super().__init__()
        self.depth = depth
        self.transposed = up == "transposed"
        self.enc = nn.ModuleList([Block(cin, f, norm, slope)] +
                                 [Block(f << (l - 1), f << l, norm, slope) for l in range(1, depth + 1)])
        dec_in = (lambda l: 2 * (f << l)) if self.transposed else (lambda l: (f << (l + 1)) + (f << l))
        self.dec = nn.ModuleList([Block(dec_in(l), f << l, norm, slope) for l in range(depth)])
        if self.transposed:
            self.ups = nn.ModuleList([nn.ConvTranspose3d(f << (l + 1), f << l, 2, stride=2) for l in range(depth)])
        self.pool = nn.MaxPool3d(2)
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.head = nn.Conv3d(f, k, 1)

    def forward(self, x):
        skips = [self.enc[0](x)]
        for l in range(1, self.depth + 1):
            skips.append(self.enc[l](self.pool(skips[-1])))
        cur = skips[self.depth]
        for l in range(self.depth - 1, -1, -1):
            up = self.ups[l](cur) if self.transposed else self.up(cur)
            cur = self.dec[l](torch.cat([up, skips[l]], dim=1))
        return self.head(cur)


def bpc_params(net):
    """(bpc relative key, torch parameter, to-bpc-layout) in any order."""
    out = []
    def conv(prefix, c):
        out.append((prefix + ".w", c.weight, lambda t: t.permute(2, 3, 4, 1, 0)))
        out.append((prefix + ".b", c.bias, lambda t: t))
    def norm(prefix, n):
        out.append((prefix + ".scale", n.weight, lambda t: t))
        out.append((prefix + ".bias", n.bias, lambda t: t))
    for name, blocks in (("enc", net.enc), ("dec", net.dec)):
        for l, b in enumerate(blocks):
            p = "%s%d" % (name, l)
            conv(p + ".conv1", b.conv1), norm(p + ".norm1", b.norm1)
            conv(p + ".conv2", b.conv2), norm(p + ".norm2", b.norm2)
    conv("head", net.head)
    if net.transposed:  # bpc's ConvTranspose3d: lax's unflipped kernel, (k, k, k, Cin, Cout)
        for l, u in enumerate(net.ups):
            out.append(("up%d.w" % l, u.weight, lambda t: t.flip(2, 3, 4).permute(2, 3, 4, 0, 1)))
            out.append(("up%d.b" % l, u.bias, lambda t: t))
    return out


def case(w, tag, norm, up="trilinear"):
    torch.manual_seed(5)
    net = UNet(1, 3, 2, 2, norm, 0.01, up).double()
    params = bpc_params(net)
    with torch.no_grad():
        for _, p, _ in params:  # float32-exact values, so both flavours start equal
            p.copy_((torch.randn(p.shape, generator=GEN, dtype=torch.float64) * 0.3).float().double())
    net.train()
    x = (torch.randn(2, 1, 8, 8, 8, generator=GEN, dtype=torch.float64)).float().double().requires_grad_(True)
    y = net(x)
    dy = torch.randn(y.shape, generator=GEN, dtype=torch.float64).float().double()
    y.backward(dy)
    cl = lambda t: t.permute(0, 2, 3, 4, 1)
    w.add(tag + ".count", torch.tensor([float(sum(p.numel() for p in net.parameters()))]).numpy())
    w.add(tag + ".x", cl(x).detach().numpy())
    w.add(tag + ".y", cl(y).detach().numpy())
    w.add(tag + ".dy", cl(dy).numpy())
    w.add(tag + ".dx", cl(x.grad).numpy())
    for key, p, lay in params:
        w.add(tag + ".var." + key, lay(p.detach()).contiguous().numpy())
        w.add(tag + ".grad." + key, lay(p.grad).contiguous().numpy())


def main():
    with FixtureWriter(os.path.join(HERE, "data", "unet.txt"),
                       "PyTorch %s U-Net reference for tests/test_unet.c (tests/gen_unet.py)" % torch.__version__) as w:
        case(w, "instance", "instance")
        case(w, "batch", "batch")
        case(w, "transposed", "instance", "transposed")


if __name__ == "__main__":
    main()
