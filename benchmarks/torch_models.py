"""PyTorch versions of the five architectures, the peers of `benchmarks.run`
(not part of the package).

Written from the paper and our Flax modules, not copied from another port.
Their module names are the Flax modules' names, so `load_flax_variables`
fills them from a Flax `{"params", "batch_stats"}` pytree by path: a kernel
[*window, in, out] becomes a weight [out, in, *window], a Dense kernel is
transposed, BatchNorm's mean / var become running_mean / running_var, the
LSTM's eight gate matrices become nn.LSTM's stacked ones. Every number-
changing detail is ours: TF SAME padding with the odd pixel at the end,
BatchNorm eps 1e-3 (without a scale where ours has none), max-pools padding
with -inf, average pools clamped to the feature map. Inputs are
channels-first ([B, C, T, H, W] clips, flow with C=2); use eval() to compare.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_i3d import same_padding
from i3d_jax.models.inception import INCEPTION_CHANNELS

BN_EPS, BN_MOMENTUM = 1e-3, 1e-3  # torch's momentum is 1 - TF's decay


def width(channels: int, multiplier: float) -> int:
    return max(1, int(round(channels * multiplier)))


def pad_same(x, kernel, stride, value=0.0):
    """TF SAME padding of the last len(kernel) axes, the odd pixel at the end."""
    flat = same_padding(x.shape[-len(kernel):], kernel, stride)
    return F.pad(x, flat, value=value) if any(flat) else x


def max_pool_same(x, kernel, stride):
    pool = F.max_pool3d if len(kernel) == 3 else F.max_pool2d
    return pool(pad_same(x, kernel, stride, value=-math.inf), kernel, stride)


def _batch_norm(rank: int, channels: int, scale: bool):
    norm = (nn.BatchNorm1d if rank == 1 else nn.BatchNorm2d if rank == 2 else nn.BatchNorm3d)(
        channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    if not scale:  # ours has an offset only: a weight of ones that never trains
        norm.weight.requires_grad_(False)
    return norm


class Unit(nn.Module):
    """Conv (SAME) -> BatchNorm -> ReLU, attribute names as ours (conv_3d, batch_norm)."""

    def __init__(self, rank, cin, cout, kernel, stride=None, batch_norm=True, scale=False,
                 bias=False, relu=True):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride or (1,) * rank)
        conv = nn.Conv3d if rank == 3 else nn.Conv2d
        self.conv_name = f"conv_{rank}d"
        setattr(self, self.conv_name, conv(cin, cout, self.kernel, self.stride, bias=bias))
        self.batch_norm = _batch_norm(rank, cout, scale) if batch_norm else None
        self.relu = relu

    def forward(self, x):
        x = getattr(self, self.conv_name)(pad_same(x, self.kernel, self.stride))
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        return F.relu(x) if self.relu else x


def _branch_names(rank):
    conv = f"Conv{rank}d"
    return (f"Branch_0_{conv}_0a_1x1", f"Branch_1_{conv}_0a_1x1", f"Branch_1_{conv}_0b_3x3",
            f"Branch_2_{conv}_0a_1x1", f"Branch_2_{conv}_0b_3x3", f"Branch_3_{conv}_0b_1x1")


class InceptionBlock(nn.Module):
    def __init__(self, rank, cin, channels, scale):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = channels
        ones, threes = (1,) * rank, (3,) * rank
        self.rank = rank
        specs = ((cin, b0, ones), (cin, b1a, ones), (b1a, b1b, threes), (cin, b2a, ones),
                 (b2a, b2b, threes), (cin, b3, ones))
        self.units = nn.ModuleDict({name: Unit(rank, i, o, k, scale=scale)
                                    for name, (i, o, k) in zip(_branch_names(rank), specs)})

    def forward(self, x):
        u = list(self.units.values())
        pooled = max_pool_same(x, (3,) * self.rank, (1,) * self.rank)
        return torch.cat([u[0](x), u[2](u[1](x)), u[4](u[3](x)), u[5](pooled)], dim=1)


class Inception(nn.Module):
    """Inception-v1 at rank 2 (TF-slim) or 3 (I3D), up to `final_endpoint`
    ("Mixed_5c", "AvgPool" or "Logits")."""

    def __init__(self, rank, in_channels, num_classes=400, width_multiplier=1.0,
                 final_endpoint="Logits", scale=False, dropout_rate=0.5):
        super().__init__()
        self.rank, self.final_endpoint = rank, final_endpoint
        w = lambda c: width(c, width_multiplier)  # noqa: E731
        conv = f"Conv{rank}d"
        shape = lambda t, s: (t, s, s)[3 - rank:]  # noqa: E731
        self.layers = nn.ModuleDict()
        self.pools = {}
        self.layers[f"{conv}_1a_7x7"] = Unit(rank, in_channels, w(64), shape(7, 7), shape(2, 2),
                                             scale=scale)
        self.pools[f"{conv}_2b_1x1"] = (shape(1, 3), shape(1, 2))
        self.layers[f"{conv}_2b_1x1"] = Unit(rank, w(64), w(64), shape(1, 1), scale=scale)
        self.layers[f"{conv}_2c_3x3"] = Unit(rank, w(64), w(192), shape(3, 3), scale=scale)
        self.pools["Mixed_3b"] = (shape(1, 3), shape(1, 2))
        self.pools["Mixed_4b"] = (shape(3, 3), shape(2, 2))
        self.pools["Mixed_5b"] = (shape(2, 2), shape(2, 2))
        channels = w(192)
        for name, widths in INCEPTION_CHANNELS.items():
            widths = tuple(w(c) for c in widths)
            self.layers[name] = InceptionBlock(rank, channels, widths, scale)
            channels = widths[0] + widths[2] + widths[4] + widths[5]
        self.features = channels
        if final_endpoint == "Logits":
            self.dropout = nn.Dropout(dropout_rate)
            self.layers["Logits"] = Unit(rank, channels, num_classes, (1,) * rank,
                                         batch_norm=False, bias=True, relu=False)

    def forward(self, x):
        for name, layer in self.layers.items():
            if name == "Logits":
                break
            if name in self.pools:
                x = max_pool_same(x, *self.pools[name])
            x = layer(x)
        if self.final_endpoint == "Mixed_5c":
            return x
        spatial = x.shape[-2:]
        window = ((min(2, x.shape[2]),) if self.rank == 3 else ()) + tuple(min(7, s) for s in spatial)
        x = (F.avg_pool3d if self.rank == 3 else F.avg_pool2d)(x, window, 1)
        if self.final_endpoint == "AvgPool":
            return x.mean(dim=(-2, -1))
        x = self.layers["Logits"](self.dropout(x)).mean(dim=(-2, -1))
        return x.mean(dim=2) if self.rank == 3 else x


def _per_frame(network, frames):
    """[B, C, S, H, W] -> network on B*S images -> [B, S, ...]."""
    b, c, s, h, w = frames.shape
    out = network(frames.transpose(1, 2).reshape(b * s, c, h, w))
    return out.reshape(b, s, *out.shape[1:])


def stack_flow(flow, per_stack):
    """[B, 2, S*L, H, W] -> [B, 2L, S, H, W], channels frame by frame (x0, y0, x1, ...)."""
    b, c, t, h, w = flow.shape
    stacks = flow.reshape(b, c, t // per_stack, per_stack, h, w).permute(0, 3, 1, 2, 4, 5)
    return stacks.reshape(b, per_stack * c, t // per_stack, h, w)


class I3D(Inception):
    def __init__(self, in_channels=3, num_classes=400, width_multiplier=1.0):
        super().__init__(3, in_channels, num_classes, width_multiplier)


class ConvNetLSTM(nn.Module):
    def __init__(self, num_classes=400, width_multiplier=1.0, lstm_features=512):
        super().__init__()
        self.InceptionV1 = Inception(2, 3, width_multiplier=width_multiplier,
                                     final_endpoint="AvgPool")
        features = self.InceptionV1.features
        self.batch_norm = _batch_norm(1, features, scale=True)
        self.LSTM = nn.LSTM(features, width(lstm_features, width_multiplier), batch_first=True)
        self.dropout = nn.Dropout(0.5)
        self.Logits = nn.Linear(width(lstm_features, width_multiplier), num_classes)

    def forward(self, x):
        features = _per_frame(self.InceptionV1, x)  # [B, T, F]
        normalised = self.batch_norm(features.transpose(1, 2)).transpose(1, 2)
        hidden, _ = self.LSTM(normalised)
        return self.Logits(self.dropout(hidden))[:, -1]


class DenseUnit(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.dense = nn.Linear(cin, cout, bias=False)
        self.batch_norm = _batch_norm(1, cout, scale=True)

    def forward(self, x):
        return F.relu(self.batch_norm(self.dense(x)))


class Conv3DNet(nn.Module):
    STAGES = ((("conv1a", 64),), (("conv2a", 128),), (("conv3a", 256), ("conv3b", 256)),
              (("conv4a", 512), ("conv4b", 512)), (("conv5a", 512), ("conv5b", 512)))

    def __init__(self, num_classes=400, width_multiplier=1.0, clip_shape=(16, 112, 112)):
        super().__init__()
        self.stages = nn.ModuleList()
        channels = 3
        for stage in self.STAGES:
            units = nn.ModuleDict()
            for name, c in stage:
                units[name] = Unit(3, channels, width(c, width_multiplier), (3, 3, 3))
                channels = width(c, width_multiplier)
            self.stages.append(units)
        grid = [math.ceil(n / 32) for n in clip_shape]  # five 2x2x2 SAME pools
        fc = width(4096, width_multiplier)
        self.fc6 = DenseUnit(channels * math.prod(grid), fc)
        self.fc7 = DenseUnit(fc, fc)
        self.dropout = nn.Dropout(0.5)
        self.Logits = nn.Linear(fc, num_classes)

    def forward(self, x):
        for units in self.stages:
            for unit in units.values():
                x = unit(x)
            x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = x.permute(0, 2, 3, 4, 1).flatten(1)  # our channels-last order
        x = self.dropout(self.fc7(self.dropout(self.fc6(x))))
        return self.Logits(x)


class TwoStream(nn.Module):
    def __init__(self, num_classes=400, width_multiplier=1.0, per_stack=10):
        super().__init__()
        self.per_stack = per_stack
        self.rgb = Inception(2, 3, num_classes, width_multiplier, dropout_rate=0.2)
        self.flow = Inception(2, 2 * per_stack, num_classes, width_multiplier, dropout_rate=0.2)

    def forward(self, rgb, flow):
        rgb_logits = _per_frame(self.rgb, rgb).mean(dim=1)
        flow_logits = _per_frame(self.flow, stack_flow(flow, self.per_stack)).mean(dim=1)
        return (rgb_logits + flow_logits) / 2


class TwoStreamFused(nn.Module):
    def __init__(self, num_classes=400, width_multiplier=1.0, per_stack=10, fusion=512):
        super().__init__()
        self.per_stack = per_stack
        self.rgb = Inception(2, 3, width_multiplier=width_multiplier, final_endpoint="Mixed_5c")
        self.flow = Inception(2, 2 * per_stack, width_multiplier=width_multiplier,
                              final_endpoint="Mixed_5c")
        fused = width(fusion, width_multiplier)
        self.Conv3d_fusion_3x3 = Unit(3, 2 * self.rgb.features, fused, (3, 3, 3))
        self.dropout = nn.Dropout(0.5)
        self.Logits = nn.Linear(fused, num_classes)

    def forward(self, rgb, flow):
        grid = torch.cat([_per_frame(self.rgb, rgb), _per_frame(self.flow, stack_flow(flow, self.per_stack))],
                         dim=2).transpose(1, 2)  # [B, C, S, H, W]
        pooled = max_pool_same(self.Conv3d_fusion_3x3(grid), (3, 3, 3), (2, 2, 2))
        return self.Logits(self.dropout(pooled.mean(dim=(2, 3, 4))))


class TwoStreamI3D(nn.Module):
    def __init__(self, num_classes=400, width_multiplier=1.0):
        super().__init__()
        self.rgb = I3D(3, num_classes, width_multiplier)
        self.flow = I3D(2, num_classes, width_multiplier)

    def forward(self, rgb, flow):
        return (self.rgb(rgb) + self.flow(flow)) / 2


def build(architecture: str, num_classes: int, width_multiplier: float = 1.0,
          clip_shape=None) -> nn.Module:
    if architecture == "i3d":
        return I3D(3, num_classes, width_multiplier)
    if architecture == "i3d_flow":
        return I3D(2, num_classes, width_multiplier)
    if architecture == "conv3d":
        return Conv3DNet(num_classes, width_multiplier, clip_shape)
    return {"convnet_lstm": ConvNetLSTM, "two_stream": TwoStream,
            "two_stream_fused": TwoStreamFused, "two_stream_i3d": TwoStreamI3D}[architecture](
        num_classes, width_multiplier)


# Our leaf name -> (torch leaf name, how the array changes).
def _conv_weight(kernel):  # [*window, in, out] -> [out, in, *window]
    return np.moveaxis(np.moveaxis(kernel, -1, 0), -1, 1)


_LEAVES = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean",
           "var": "running_var"}
_LSTM_GATES = "ifgo"  # nn.LSTM's order of the stacked gate matrices


def _flat(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict) or hasattr(value, "items"):
            yield from _flat(value, prefix + (key,))
        else:
            yield prefix + (key,), np.asarray(value, np.float32)


def _torch_path(model: nn.Module, path) -> str:
    """Our module path -> the torch module's dotted path (containers in between)."""
    module, names = model, []
    for part in path:
        for container in ("layers", "units", "stages"):
            holder = getattr(module, container, None)
            if isinstance(holder, nn.ModuleDict) and part in holder:
                module, names = holder[part], names + [container, part]
                break
            if isinstance(holder, nn.ModuleList):
                index = next((i for i, m in enumerate(holder) if part in m), None)
                if index is not None:
                    module, names = holder[index][part], names + [container, str(index), part]
                    break
        else:
            if not isinstance(getattr(module, part, None), nn.Module):
                return None
            module, names = getattr(module, part), names + [part]
    return ".".join(names)


def load_flax_variables(model: nn.Module, variables) -> None:
    """Copies our Flax variables into `model`; every tensor of the model is
    set (BatchNorm weights ours has no scale for become ones), every one of
    ours is used, or the keys that differ are named."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    new = {}
    lstm = {}
    for collection in ("params", "batch_stats"):
        for path, value in _flat(variables.get(collection, {})):
            if any("LSTM" in part for part in path[:-2]):  # the cell's gate matrices
                lstm[path[-2:]] = value
                continue
            *modules, leaf = path
            prefix = _torch_path(model, modules)
            if prefix is None or leaf not in _LEAVES:  # no such torch module: named below
                new["/".join(path)] = value
                continue
            key = f"{prefix}.{_LEAVES[leaf]}"
            if leaf == "kernel":
                value = value.T if value.ndim == 2 else _conv_weight(value)
            new[key] = value
    if lstm:
        for kind, torch_name in (("i", "ih"), ("h", "hh")):
            new[f"LSTM.weight_{torch_name}_l0"] = np.concatenate(
                [lstm[(kind + g, "kernel")].T for g in _LSTM_GATES])
        new["LSTM.bias_hh_l0"] = np.concatenate([lstm[("h" + g, "bias")] for g in _LSTM_GATES])
        new["LSTM.bias_ih_l0"] = np.zeros_like(new["LSTM.bias_hh_l0"])
    for key in state:
        if key not in new and key.endswith(".weight") and key.rsplit(".", 1)[0].endswith("batch_norm"):
            new[key] = np.ones(state[key].shape, np.float32)
    missing, unused = sorted(set(state) - set(new)), sorted(set(new) - set(state))
    if missing or unused:
        raise KeyError(f"torch tensors without a Flax value: {missing[:8]}; "
                       f"Flax values without a torch tensor: {unused[:8]}")
    for key, value in new.items():
        if tuple(state[key].shape) != value.shape:
            raise ValueError(f"{key}: torch shape {tuple(state[key].shape)}, ours {value.shape}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in new.items()},
                          strict=False)
