"""Training and evaluation: `train_and_evaluate(config, workdir)`.

The state is born sharded (`jax.eval_shape(init)` -> shardings from the
fsdp rule -> `jax.jit(init, out_shardings=...)`), one `jax.jit` step with
explicit shardings updates it in place (donated), and each process feeds
its own part of every global batch. Which model runs, which streams it is
fed and which of its outputs get a loss all come from the config: the
trainer knows no architecture by name.

One module a job:
- `step.py`: the train state, the loss, the step functions;
- `optim.py`: the optimiser and learning-rate schedule;
- `config_keys.py`: what the config's keys mean, checked up front;
- `run.py`: set-up (mesh, dataset, model and kernels, evaluator) and the first state;
- `init_from.py`: a new run's weights from elsewhere;
- `workdir.py`: the lock, config.json and the metrics files;
- `resume.py`: what a resume checks (the config's changes, whole checkpoints);
- `loop.py`: the loop, resume and preemption.
Evaluation lives in `i3d_jax.evaluation`, which knows nothing of this package.
"""
from i3d_jax.evaluation import EvalPredictions, Evaluator
from i3d_jax.train.config_keys import (
    BATCH_NORM_MODES, DTYPES, check_config, clip_options, loss_endpoints, model_fields, streams)
from i3d_jax.train.loop import PreemptionNotice, train_and_evaluate
from i3d_jax.train.optim import OPTIMIZERS, SCHEDULES, TRAINABLE, make_optimizer, make_schedule
from i3d_jax.train.run import (
    STREAM_ENDPOINTS, Run, initial_state, load_run_for_eval, setup, warn_if_emulated_bf16)
from i3d_jax.train.step import StepFunctions, TrainState, jit_train_step, state_key
from i3d_jax.train.workdir import workdir_lock

__all__ = [
    "BATCH_NORM_MODES", "DTYPES", "OPTIMIZERS", "SCHEDULES", "STREAM_ENDPOINTS", "TRAINABLE",
    "EvalPredictions", "Evaluator", "PreemptionNotice", "Run", "StepFunctions", "TrainState",
    "check_config", "clip_options", "initial_state", "jit_train_step", "load_run_for_eval",
    "loss_endpoints", "make_optimizer", "make_schedule", "model_fields", "setup", "state_key",
    "streams", "train_and_evaluate", "warn_if_emulated_bf16", "workdir_lock",
]
