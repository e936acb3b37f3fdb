"""A compact PyTorch I3D, written for the CPU benchmark (not part of the package).

It computes the same function as DeepMind's released TF model and as the
pytorch-i3d port, and its module and parameter names equal pytorch-i3d's
`state_dict()` names (`Conv3d_1a_7x7.conv3d.weight`, `Mixed_3b.b1b.bn.bias`,
`logits.conv3d.bias`, ...), so a pytorch-i3d state_dict loads with
`strict=True`. Input is [B, C, T, H, W] in [-1, 1]; use it in eval mode.

Details that change the numbers:
- TF "SAME" padding, computed per forward from the input size, with the odd
  pixel at the end (PyTorch's symmetric `padding=` cannot express that);
- BatchNorm eps 1e-3;
- max-pools pad with -inf, so they equal TF's SAME max-pool (pytorch-i3d pads
  with zeros, which only agrees because every pool follows a ReLU);
- a 2x7x7 average pool, stride 1, VALID, then dropout and a 1x1x1 logits conv
  with a bias.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Inception block output channels: (b0, b1a, b1b, b2a, b2b, b3b), as in the paper.
INCEPTION_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# Max-pools that come before some blocks: name -> (before block, kernel, stride).
_POOLS_BEFORE = {
    "Mixed_3b": ("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
}


def same_padding(sizes, kernel, stride):
    """F.pad amounts for TF SAME over the last len(sizes) dims of a tensor.

    TF SAME gives ceil(size / stride) outputs and puts the odd padded pixel at
    the end. F.pad takes (last-dim before, last-dim after, ...), hence the
    reversal.
    """
    pads = []
    for size, k, s in zip(sizes, kernel, stride):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return [p for before_after in reversed(pads) for p in before_after]


class Unit3D(nn.Module):
    """Conv3d (TF SAME) -> BatchNorm (eps 1e-3) -> ReLU; logits: conv with bias only."""

    def __init__(self, in_ch, out_ch, kernel=(1, 1, 1), stride=(1, 1, 1),
                 batch_norm=True, activation=True, bias=False):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        # Padding is applied in forward, so the conv itself pads nothing.
        self.conv3d = nn.Conv3d(in_ch, out_ch, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_ch, eps=1e-3, momentum=0.01) if batch_norm else None
        self.activation = activation

    def forward(self, x):
        pad = same_padding(x.shape[2:], self.kernel, self.stride)
        if any(pad):
            x = F.pad(x, pad)
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        pad = same_padding(x.shape[2:], self.kernel, self.stride)
        if any(pad):
            # TF's SAME max-pool ignores the padding, as -inf padding does.
            x = F.pad(x, pad, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionBlock(nn.Module):
    def __init__(self, in_ch, channels):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = channels
        self.b0 = Unit3D(in_ch, c0)
        self.b1a = Unit3D(in_ch, c1a)
        self.b1b = Unit3D(c1a, c1b, (3, 3, 3))
        self.b2a = Unit3D(in_ch, c2a)
        self.b2b = Unit3D(c2a, c2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))  # no parameters
        self.b3b = Unit3D(in_ch, c3b)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x):
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))],
            dim=1,
        )


class InceptionI3d(nn.Module):
    """I3D on [B, C, T, H, W]. forward returns (per-time logits [B, classes, T'],
    pooled features [B, 1024, T']); average the logits over T' for clip logits."""

    def __init__(self, num_classes=400, in_channels=3, dropout_rate=0.5):
        super().__init__()
        # Attribute names are pytorch-i3d's state_dict prefixes.
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        ch = 192
        self.blocks = []
        for name, channels in INCEPTION_CHANNELS.items():
            if name in _POOLS_BEFORE:
                pool_name, kernel, stride = _POOLS_BEFORE[name]
                setattr(self, pool_name, MaxPool3dSame(kernel, stride))
                self.blocks.append(pool_name)
            block = InceptionBlock(ch, channels)
            setattr(self, name, block)
            self.blocks.append(name)
            ch = block.out_channels
        self.dropout = nn.Dropout(dropout_rate)
        self.logits = Unit3D(ch, num_classes, batch_norm=False, activation=False, bias=True)

    def forward(self, x):
        x = self.Conv3d_1a_7x7(x)
        x = self.MaxPool3d_2a_3x3(x)
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        for name in self.blocks:
            x = getattr(self, name)(x)
        # 2x7x7 VALID, stride 1. Like the JAX model, the window is clamped to
        # maps smaller than that (short clips, small frames); at 224x224 and
        # 16+ frames it is exactly 2x7x7.
        t, h, w = x.shape[2:]
        x = F.avg_pool3d(x, (min(2, t), min(7, h), min(7, w)), stride=1)
        features = x.mean(dim=(3, 4))  # [B, 1024, T'] (spatially 1x1 at 224)
        x = self.logits(self.dropout(x))
        per_time = x.mean(dim=(3, 4))  # [B, classes, T']
        return per_time, features
