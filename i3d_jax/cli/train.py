"""`i3d-jax train` and `i3d-jax eval`: ml-collections configs through absl flags.

argparse reads `--workdir` and `--config` (so `--help` documents them) and
leaves every `--config.KEY=VALUE` to ml_collections' `config_flags`, run by
absl's `app.run`; configs are locked, so an unknown key is refused before
anything heavy runs. The work is `i3d_jax.train.train_and_evaluate`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from i3d_jax.configs import default_config_path

OVERRIDES_HELP = ("--config.KEY=VALUE overrides a key of the config (every key is declared, "
                  "with its meaning, in experiments/default.py); a key it does not declare is "
                  "refused.")


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train a model from an ml-collections config, or resume its workdir",
        description="Train (or resume) in --workdir. With no --config it runs the main job: "
                    "a narrow I3D on the generated synthetic_motion dataset, built on first use.",
        epilog=OVERRIDES_HELP)
    train.add_argument("--workdir", required=True,
                       help="run directory: config.json, checkpoints/, metrics.jsonl, TensorBoard "
                            "events; rerunning on it resumes from its latest checkpoint")
    train.add_argument("--config", default=None,
                       help="experiments/NAME.py[:ARG] (default: experiments/default.py, the "
                            "main job)")
    multihost = train.add_argument_group(
        "multi-host", "one process per host, all with the same command but --process_id; "
        "without these flags a SLURM job of several tasks or a TPU pod slice is detected")
    multihost.add_argument("--coordinator_address", default=None,
                           help="HOST:PORT of process 0, which every process connects to")
    multihost.add_argument("--num_processes", type=int, default=None,
                           help="how many processes the job has")
    multihost.add_argument("--process_id", type=int, default=None,
                           help="this process's index, 0 to num_processes - 1")
    train.set_defaults(func=run_train, takes_config_overrides=True)

    evaluate = subparsers.add_parser(
        "eval", help="evaluate a training workdir's checkpoint on its config's eval split",
        description="Evaluate the latest (or --step) checkpoint of a training workdir with the "
                    "config it was trained with (its config.json).",
        epilog=OVERRIDES_HELP)
    evaluate.add_argument("--workdir", required=True, help="a training run's directory")
    evaluate.add_argument("--config", default=None,
                          help="experiments/NAME.py[:ARG] instead of the workdir's config.json")
    evaluate.add_argument("--step", type=int, default=None,
                          help="the checkpoint's step (default: the latest)")
    evaluate.add_argument("--fuse", nargs="+", default=None, metavar="OTHER_WORKDIR",
                          help="average the logits of other runs' latest checkpoints on their "
                               "own configs' eval splits with this one's, video by video (an "
                               "RGB run with a flow run: the paper's two-stream test)")
    evaluate.add_argument("--json", action="store_true",
                          help='print {"step", "top1", "top5", "mean_class_accuracy", '
                               '"num_examples", "per_class_accuracy", "confusion_png", ...} as '
                               "the last line")
    evaluate.set_defaults(func=run_eval, takes_config_overrides=True)


def config_from_json(path: Path):
    """A locked config with every key of experiments/default.py, valued from a
    run's config.json (a key the default does not declare is refused)."""
    import ml_collections

    from i3d_jax.configs import default_config

    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is --workdir a training run's directory?")
    config = default_config()
    with open(path) as f:
        saved = json.load(f)

    def update(target, values, prefix):
        for key, value in values.items():
            name = f"{prefix}{key}"
            if key not in target:
                raise ValueError(f"{path}: key {name} is not a config key of this version")
            if isinstance(target[key], ml_collections.ConfigDict):
                update(target[key], value, f"{name}.")
            else:
                target[key] = tuple(value) if isinstance(value, list) else value

    with config.unlocked():
        update(config, saved, "")
    config.lock()
    return config


def _config_argv(args) -> list[str]:
    """The argv config_flags reads the --config.KEY overrides from: ours, not
    sys.argv (which holds `--config FILE` for argparse, and then config_flags
    waits for a --config value that absl is never given)."""
    return ["i3d-jax " + args.command, *args.config_overrides]


def _absl_run(main, args, config_flag) -> int:
    from absl import app, flags

    flags.FLAGS.unparse_flags()
    argv = ["i3d-jax " + args.command, *config_flag, *args.config_overrides]
    result = {}

    def wrapped(argv_rest):
        if len(argv_rest) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv_rest[1:])}")
        result["code"] = main()

    try:
        app.run(wrapped, argv=argv)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    return result.get("code", 0)


def _cluster_detected() -> bool:
    """A launch that jax.distributed.initialize() can configure by itself."""
    import os

    return (int(os.environ.get("SLURM_NTASKS", "1")) > 1
            or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""))


def start_distributed(args) -> None:
    """jax.distributed.initialize, before any other JAX call, from the flags or the
    cluster's environment; nothing for a single process."""
    given = [args.coordinator_address, args.num_processes, args.process_id]
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise ValueError("--coordinator_address, --num_processes and --process_id go "
                             "together: give all three or none")
        if args.num_processes < 1:
            raise ValueError(f"--num_processes must be at least 1, got {args.num_processes}")
        if not 0 <= args.process_id < args.num_processes:
            raise ValueError(f"--process_id {args.process_id} is out of range for "
                             f"--num_processes {args.num_processes} (0 to {args.num_processes - 1})")
    import jax

    if any(v is not None for v in given):
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    elif _cluster_detected():
        jax.distributed.initialize()


def run_train(args) -> int:
    from absl import flags
    from ml_collections import config_flags

    start_distributed(args)

    # The file is the flag's default, not an argument: config_flags defines the
    # --config.KEY flags when it reads the file, and reading it twice defines them twice.
    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", args.config or str(default_config_path()),
                                        "the run's config", lock_config=True,
                                        sys_argv=_config_argv(args))

    def main():
        import jax
        from absl import logging

        from i3d_jax.train import train_and_evaluate

        if jax.process_index() > 0:
            logging.set_verbosity(logging.WARNING)  # process 0 speaks for the job
        train_and_evaluate(flags.FLAGS.config, args.workdir)
        return 0

    return _absl_run(main, args, [])


def run_eval(args) -> int:
    from absl import flags
    from ml_collections import config_flags

    if args.config:
        if "config" not in flags.FLAGS:
            config_flags.DEFINE_config_file("config", args.config, "the run's config",
                                            lock_config=True, sys_argv=_config_argv(args))
        config_flag = []
    else:
        if "config" not in flags.FLAGS:
            config_flags.DEFINE_config_dict(
                "config", config_from_json(Path(args.workdir) / "config.json"),
                "the run's config", sys_argv=_config_argv(args))
        config_flag = []

    def main():
        from i3d_jax import evaluation
        from i3d_jax.train import (load_run_for_eval, predict_eval_split, prediction_metrics,
                                   stream_top1_text)

        run, variables, step = load_run_for_eval(flags.FLAGS.config, args.workdir, args.step)
        num_classes = run.metadata.num_classes
        class_names = run.metadata.labels or [str(c) for c in range(num_classes)]
        predictions = predict_eval_split(run, variables)
        record = {"step": step}
        if args.fuse:
            runs, names = [predictions], [args.workdir]
            for other in args.fuse:
                other_run, other_variables, _ = load_run_for_eval(
                    config_from_json(Path(other) / "config.json"), other)
                runs.append(predict_eval_split(other_run, other_variables))
                names.append(other)
            record["runs"] = {name: {"top1": prediction_metrics(r, num_classes)["top1"]}
                              for name, r in zip(names, runs)}
            predictions = evaluation.fuse(runs, names)
        metrics, confusion = evaluation.report(predictions, class_names)
        suffix = "_fused" if args.fuse else ""
        png = evaluation.plot_confusion(
            confusion, class_names, Path(args.workdir) / "eval" / f"confusion_step{step}{suffix}.png",
            f"{run.config.dataset} {run.config.eval_split}, step {step}"
            + (f", fused with {len(args.fuse)} run(s)" if args.fuse else ""))
        record.update(metrics, confusion_png=str(png))
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            print(f"step {step}{' fused' if args.fuse else ''}: top-1 {metrics['top1']:.4f}  "
                  f"top-5 {metrics['top5']:.4f}  mean class accuracy "
                  f"{metrics['mean_class_accuracy']:.4f}{stream_top1_text(metrics)}  "
                  f"({metrics['num_examples']} videos)")
            worst = sorted(metrics["per_class_accuracy"].items(), key=lambda kv: kv[1])[:5]
            print("lowest per-class accuracy: "
                  + ", ".join(f"{name} {acc:.2f}" for name, acc in worst))
            print(f"confusion matrix: {png}")
        sys.stdout.flush()
        return 0

    return _absl_run(main, args, config_flag)
