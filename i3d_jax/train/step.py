"""The train step: the state, the loss, and the step functions, pure
functions of the state and a batch (`StepFunctions`), jitted with explicit
shardings and the state donated (`jit_train_step`).

What differs between backends (the gradient norm's order of sums, how a
non-finite step is kept from changing the state) comes in with the model's
`kernels`; the step itself does not look at the backend.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from i3d_jax import sharding
from i3d_jax.streams import model_inputs
from i3d_jax.kernels.xla import XLA, Kernels
from i3d_jax.train.optim import is_classifier


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    # The first step whose loss or gradient norm was not finite (-1: none). From
    # then on the state stops changing, so what the host saves is the last good one.
    first_bad_step: jax.Array


def state_key(seed: int) -> jax.Array:
    """The run's PRNG key. RBG, not threefry: XLA:CPU compiles threefry slowly, once
    per parameter, and the init of I3D took 31 s to compile with it, 8 s with RBG.
    RBG's draws depend on how the arrays are sharded, so a run is reproducible
    for a given mesh (and a resume on another mesh continues from saved values)."""
    return jax.random.key(seed, impl="rbg")


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Mean softmax cross-entropy; logits [B, (T,) C] (a loss at every step) and labels [B]."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        onehot = optax.smooth_labels(onehot, label_smoothing)
    onehot = jnp.broadcast_to(onehot.reshape(onehot.shape[:1] + (1,) * (logits.ndim - 2)
                                             + onehot.shape[1:]), logits.shape)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot).mean()


@dataclasses.dataclass(frozen=True)
class StepFunctions:
    """The model-specific parts of the steps, fixed for a run."""

    model: Any
    optimizer: optax.GradientTransformation
    schedule: Any
    stream_names: tuple[str, ...]
    loss_endpoints: tuple[str, ...] = ()
    label_smoothing: float = 0.0
    batch_norm: str = "global"
    grad_accum_steps: int = 1
    # Devices whose batch shards get their own BatchNorm statistics ("per_device").
    num_batch_groups: int = 1
    mesh: Any = None
    # Endpoints evaluated besides the logits: a two-stream model's own streams.
    eval_endpoints: tuple[str, ...] = ()
    # "classifier": gradients for the Logits modules only (none through the trunk).
    trainable: str = "all"

    def init(self, rng, example_inputs) -> TrainState:
        params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
        variables = self.model.init({"params": params_rng, "dropout": dropout_rng},
                                    example_inputs, train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=self.optimizer.init(params), rng=state_rng,
                          first_bad_step=jnp.full((), -1, jnp.int32))

    def _apply(self, params, batch_stats, inputs, rng):
        """(logits, endpoints or None, new batch_stats) in training mode."""
        variables = {"params": params, "batch_stats": batch_stats}
        kwargs = {"return_endpoints": True} if self.loss_endpoints else {}
        if self.batch_norm == "frozen":
            # The model was built with frozen_batch_norm: running averages only.
            out = self.model.apply(variables, inputs, train=True, rngs={"dropout": rng}, **kwargs)
            new_stats = batch_stats
        else:
            out, updates = self.model.apply(variables, inputs, train=True, rngs={"dropout": rng},
                                            mutable=["batch_stats"], **kwargs)
            new_stats = updates.get("batch_stats", batch_stats)
        logits, endpoints = out if self.loss_endpoints else (out, None)
        return logits, endpoints, new_stats

    def _apply_per_group(self, params, batch_stats, inputs, rng):
        """Each device's shard of the batch through BatchNorm on its own statistics:
        the batch as [groups, B / groups, ...], vmapped, the group axis on the devices."""
        groups = self.num_batch_groups
        group_sharding = NamedSharding(self.mesh, P(sharding.BATCH_AXES))

        def split(x):
            x = x.reshape(groups, x.shape[0] // groups, *x.shape[1:])
            return jax.lax.with_sharding_constraint(x, group_sharding)

        grouped = jax.tree.map(split, inputs)
        rngs = jax.random.split(rng, groups)
        logits, endpoints, stats = jax.vmap(self._apply, in_axes=(None, None, 0, 0))(
            params, batch_stats, grouped, rngs)
        merge = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        # Running statistics: the average of the devices' (each device's own
        # would differ; one copy is kept).
        return (merge(logits), None if endpoints is None else jax.tree.map(merge, endpoints),
                jax.tree.map(lambda s: s.mean(axis=0), stats))

    def loss_fn(self, params, batch_stats, batch, rng):
        if self.trainable == "classifier":
            # The trunk as constants: XLA then drops the whole backward pass through it.
            params = jax.tree_util.tree_map_with_path(
                lambda path, p: p if is_classifier(path) else jax.lax.stop_gradient(p), params)
        inputs = model_inputs(batch, self.stream_names)
        apply = self._apply_per_group if self.batch_norm == "per_device" else self._apply
        logits, endpoints, new_stats = apply(params, batch_stats, inputs, rng)
        labels = batch["label"]
        if self.loss_endpoints:
            missing = [e for e in self.loss_endpoints if e not in endpoints]
            if missing:
                raise ValueError(f"config.loss.endpoints names {missing}; the model returns "
                                 f"{sorted(endpoints)}")
            loss = sum(cross_entropy(endpoints[e], labels, self.label_smoothing)
                       for e in self.loss_endpoints) / len(self.loss_endpoints)
        else:
            loss = cross_entropy(logits, labels, self.label_smoothing)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return loss, (new_stats, correct.mean())

    def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(self.loss_fn, has_aux=True)
        k = self.grad_accum_steps
        if k == 1:
            (loss, (new_stats, accuracy)), grads = grad_fn(
                state.params, state.batch_stats, batch, rng)
        else:
            # Micro-batch j takes rows j, j + k, ...: every device keeps feeding
            # its own rows, nothing moves between devices.
            def micro(x):
                return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)

            micro_batches = jax.tree.map(micro, batch)

            def accumulate(carry, xs):
                grads_sum, stats, loss_sum, acc_sum = carry
                micro_batch, j = xs
                (loss, (stats, acc)), grads = grad_fn(state.params, stats, micro_batch,
                                                      jax.random.fold_in(rng, j))
                grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
                return (grads_sum, stats, loss_sum + loss, acc_sum + acc), None

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            (grads, new_stats, loss, accuracy), _ = jax.lax.scan(
                accumulate, (zeros, state.batch_stats, 0.0, 0.0), (micro_batches, jnp.arange(k)))
            grads = jax.tree.map(lambda g: g / k, grads)
            loss, accuracy = loss / k, accuracy / k

        grad_norm = self.gradient_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep_going = finite & (state.first_bad_step < 0)

        def updated(state):
            updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
            return state.replace(step=state.step + 1,
                                 params=optax.apply_updates(state.params, updates),
                                 batch_stats=new_stats, opt_state=opt_state)

        new_state = self.kernels.guard(keep_going, updated, state)
        new_state = new_state.replace(first_bad_step=jnp.where(
            (state.first_bad_step < 0) & ~finite, state.step + 1, state.first_bad_step))
        metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": grad_norm,
                   "learning_rate": jnp.asarray(self.schedule(state.step), jnp.float32)}
        return new_state, metrics

    @property
    def kernels(self) -> Kernels:
        """The model's kernels (XLA's for a model without the field)."""
        return getattr(self.model, "kernels", XLA)

    def gradient_norm(self, grads):
        """The global norm of `grads`, in the kernels' order of sums."""
        return self.kernels.global_norm(grads)

    def eval_step(self, params, batch_stats, batch):
        """{"logits": [B, C], and each of `eval_endpoints`} of eval batches [B, V, T, ...],
        logits averaged over the V views (`evaluation.view_averaged_logits`)."""
        from i3d_jax.evaluation import view_averaged_logits

        return view_averaged_logits(self.model, self.stream_names, self.eval_endpoints,
                                    params, batch_stats, batch)


def jit_train_step(fns: StepFunctions, state_shardings, mesh):
    """The jitted step: state in and out with its shardings (donated), batches split."""
    return jax.jit(fns.train_step,
                   in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=0)
