"""The paper's five architectures: parameter counts against Table 1, shapes at
the paper's input sizes (traced only), and one forward pass and one gradient
step of each at tiny width on CPU."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from i3d_jax import cli
from i3d_jax.models import ARCHITECTURES, build_model, paper_inputs
from i3d_jax.models.conv3d import CONV_STAGES
from i3d_jax.models.stats import abstract_variables, count_params
from variables_for_tests import random_variables

# Table 1 of the paper (parameters, at Kinetics' 400 classes).
TABLE_1_PARAMS = {
    "convnet_lstm": 9e6,
    "conv3d": 79e6,
    "two_stream": 12e6,
    "two_stream_fused": 39e6,
    "two_stream_i3d": 25e6,
}


@pytest.mark.parametrize("arch", sorted(TABLE_1_PARAMS))
def test_parameter_count_matches_table_1(arch):
    model = build_model(arch, num_classes=400)
    params = count_params(abstract_variables(model, paper_inputs(arch)))
    assert abs(params / TABLE_1_PARAMS[arch] - 1) < 0.08, f"{arch}: {params:,} parameters"


def test_inception_v1_with_gamma_has_torchvision_googlenet_parameter_count():
    # The reference README's count for torchvision's googlenet without its
    # auxiliary heads (BatchNorm with gamma, 1000 classes).
    model = build_model("inception_v1", batch_norm_scale=True)
    assert count_params(abstract_variables(model, paper_inputs("inception_v1"))) == 6_624_904


# Output and characteristic endpoints at the paper's training input size.
PAPER_SHAPES = {
    "i3d": {"Logits": (1, 400), "AvgPool": (1, 7, 1024), "Mixed_5c": (1, 8, 7, 7, 1024)},
    "inception_v1": {"Logits": (1, 1000), "Mixed_5c": (1, 7, 7, 1024)},
    "convnet_lstm": {
        "Logits": (1, 400),
        "AvgPool": (1, 25, 1024),
        "LSTM": (1, 25, 512),
        "LogitsPerTime": (1, 25, 400),
    },
    "conv3d": {"Logits": (1, 400), "pool5": (1, 1, 4, 4, 512), "fc7": (1, 4096)},
    "two_stream": {"Logits": (1, 400), "rgb_logits": (1, 400), "flow_logits": (1, 400)},
    "two_stream_fused": {
        "Logits": (1, 400),
        "Mixed_5c": (1, 5, 7, 7, 2048),
        "Conv3d_fusion_3x3": (1, 5, 7, 7, 512),
    },
    "two_stream_i3d": {"Logits": (1, 400), "rgb_logits": (1, 400), "flow_logits": (1, 400)},
}


def test_every_architecture_has_paper_shapes():
    assert set(PAPER_SHAPES) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", sorted(PAPER_SHAPES))
def test_shapes_at_paper_input_size(arch):
    model = build_model(arch)
    inputs = paper_inputs(arch)
    variables = abstract_variables(model, inputs)
    _, endpoints = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, return_endpoints=True), variables, inputs
    )
    got = {name: tuple(endpoints[name].shape) for name in PAPER_SHAPES[arch]}
    assert got == PAPER_SHAPES[arch]


def _tiny_inputs(arch, rng):
    # Frames of 64x64 leave 2x2 maps after the last pool: BatchNorm over a
    # 1x1 map of two examples would make the loss needlessly sharp.
    frames = lambda *shape: rng.uniform(-1, 1, shape).astype(np.float32)  # noqa: E731
    return {
        "i3d": frames(2, 16, 64, 64, 3),
        "inception_v1": frames(4, 64, 64, 3),
        "convnet_lstm": frames(2, 3, 64, 64, 3),
        "conv3d": frames(8, 4, 32, 32, 3),
        "two_stream": {"rgb": frames(2, 1, 64, 64, 3), "flow": frames(2, 10, 64, 64, 2)},
        "two_stream_fused": {"rgb": frames(2, 2, 64, 64, 3), "flow": frames(2, 20, 64, 64, 2)},
        "two_stream_i3d": {"rgb": frames(2, 16, 64, 64, 3), "flow": frames(2, 16, 64, 64, 2)},
    }[arch]


def _tiny_model(arch):
    fields = {"num_classes": 5, "width_multiplier": 1 / 8}
    if arch == "conv3d":
        fields.update(clip_shape=(4, 32, 32), width_multiplier=1 / 16)
    return build_model(arch, **fields)


# Tiny inputs make compilation the cost of these tests; LLVM's optimisations
# would more than double it and buy nothing at this size.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_tiny_forward_and_gradient_step(arch):
    """A forward pass in train mode (batch statistics, dropout) and a small
    step along the negative gradient, which must lower the loss by what the
    gradient predicts (first order); the gradient is finite and reaches
    every parameter (both streams, the LSTM, the fusion layers)."""
    model = _tiny_model(arch)
    inputs = _tiny_inputs(arch, np.random.default_rng(0))
    variables = random_variables(abstract_variables(model, inputs))
    batch = jax.tree.leaves(inputs)[0].shape[0]
    labels = jnp.arange(batch) % 5
    dropout = jax.random.PRNGKey(7)

    def loss_fn(params):
        (logits, endpoints), updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            inputs,
            train=True,
            return_endpoints=True,
            rngs={"dropout": dropout},
            mutable=["batch_stats"],
        )
        if arch == "convnet_lstm":  # the paper's loss at every time step
            per_time = endpoints["LogitsPerTime"]
            step_labels = jnp.broadcast_to(labels[:, None], per_time.shape[:2])
            return optax.softmax_cross_entropy_with_integer_labels(
                per_time, step_labels
            ).mean(), updates
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), compiler_options=FAST_COMPILE)
    (loss, updates), grads = step(variables["params"])
    loss = float(loss)
    assert np.isfinite(loss)
    # Batch statistics moved towards this batch's.
    assert not np.allclose(
        jax.tree.leaves(updates["batch_stats"])[0], jax.tree.leaves(variables["batch_stats"])[0]
    )
    # In NumPy from here: an eager JAX op per parameter would compile one
    # program per parameter shape, which costs more than the step itself.
    grads = jax.tree.map(np.asarray, grads)
    flat = traverse_util.flatten_dict(grads)
    not_finite = ["/".join(k) for k, g in flat.items() if not np.isfinite(g).all()]
    assert not not_finite, f"gradient not finite at {not_finite}"
    dead = ["/".join(k) for k, g in flat.items() if not np.any(g)]
    assert not dead, f"no gradient reaches {dead}"
    # A step of length 1e-5 against the gradient gains 1e-5 * |gradient| to
    # first order; measured at these sizes the gain is within 20% of that.
    norm = float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in flat.values())))
    params = jax.tree.map(lambda p, g: (p - 1e-5 / norm * g).astype(np.float32),
                          variables["params"], grads)
    (new_loss, _), _ = step(params)
    gain, predicted = loss - float(new_loss), 1e-5 * norm
    assert 0.5 * predicted < gain < 1.5 * predicted, (loss, float(new_loss), predicted)


def _valid_taps(n: int, k: int = 3) -> int:
    """Sum over SAME outputs of the kernel taps that fall inside the input."""
    before = (k - 1) // 2
    return sum(sum(1 for j in range(k) if 0 <= i - before + j < n) for i in range(n))


def test_summary_json_counts_conv3d_flops(capsys):
    # conv3d at 1/16 width (compiles in seconds at the paper's 16x112x112).
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["summary", "--arch", "conv3d", "--json", "--width-multiplier", "0.0625"])
    assert exit_info.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    model = build_model("conv3d", width_multiplier=0.0625)
    assert summary["arch"] == "conv3d"
    assert summary["params"] == count_params(abstract_variables(model, paper_inputs("conv3d")))
    # Multiply-adds of the convs (XLA leaves out taps on SAME padding) and
    # the fully connected layers, two FLOPs each; BatchNorm, ReLU and pools
    # add a little on top.
    t, h, w, channels, macs = 16, 112, 112, 3, 0
    for convs in CONV_STAGES:
        for _, features in convs:
            features = max(1, round(features * 0.0625))
            macs += _valid_taps(t) * _valid_taps(h) * _valid_taps(w) * channels * features
            channels = features
        t, h, w = math.ceil(t / 2), math.ceil(h / 2), math.ceil(w / 2)
    fc = 4096 // 16
    macs += t * h * w * channels * fc + fc * fc + fc * 400
    assert 2 * macs <= summary["flops"] < 2 * macs * 1.1
