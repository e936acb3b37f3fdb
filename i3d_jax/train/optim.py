"""The optimiser and learning-rate schedule a config names: SGD with momentum
(the paper's) or AdamW, weight decay on kernels only, gradient clipping, a
linear warmup into a constant, piecewise-constant or cosine schedule, and
`trainable="classifier"` (the Logits modules alone get updates)."""
from __future__ import annotations

import jax
import optax

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "piecewise", "cosine")


def make_schedule(config):
    s = config.schedule
    if s.name not in SCHEDULES:
        raise ValueError(f"config.schedule.name must be one of {SCHEDULES}, got {s.name!r}")
    warmup = min(s.warmup_steps, config.total_steps)
    rest = max(config.total_steps - warmup, 1)
    if s.name == "constant":
        main = optax.constant_schedule(s.learning_rate)
    elif s.name == "cosine":
        main = optax.cosine_decay_schedule(s.learning_rate, rest)
    else:
        boundaries = [b - warmup for b in s.boundaries if b > 0]
        main = optax.piecewise_constant_schedule(
            s.learning_rate, {b: s.factor for b in boundaries if b > 0})
    if not warmup:
        return main
    return optax.join_schedules(
        [optax.linear_schedule(0.0, s.learning_rate, warmup), main], [warmup])


TRAINABLE = ("all", "classifier")


def is_classifier(path) -> bool:
    """A parameter of a `Logits` module (every classifier head of our architectures)."""
    return any(getattr(k, "key", None) == "Logits" for k in path)


def _classifier_labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if is_classifier(path) else "freeze", params)


def _decay_mask(params):
    # Kernels only: biases, BatchNorm offsets and scales are not decayed.
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config, schedule) -> optax.GradientTransformation:
    o = config.optimizer
    if o.name not in OPTIMIZERS:
        raise ValueError(f"config.optimizer.name must be one of {OPTIMIZERS}, got {o.name!r}")
    parts = []
    if o.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    if o.name == "sgd":
        if o.weight_decay:
            parts.append(optax.add_decayed_weights(o.weight_decay, mask=_decay_mask))
        parts.append(optax.sgd(schedule, momentum=o.momentum or None, nesterov=o.nesterov))
    else:
        parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                                 mask=_decay_mask))
    optimizer = optax.chain(*parts)
    if config.trainable == "classifier":
        # The trunk's parameters get no update (and no optimiser state) at all.
        optimizer = optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()},
                                          _classifier_labels)
    return optimizer
