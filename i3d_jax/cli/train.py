"""`i3d-jax train` and `i3d-jax eval`: ml-collections configs and their overrides.

argparse reads `--workdir` and `--config` (so `--help` documents them); the
config is loaded here (`NAME[:ARG]` or a file) and every `--config.KEY=VALUE`
is applied by ml_collections' `config_flags` on a flag set of its own. Configs
are locked: an unknown key, a value of the wrong type, an unknown argument or a
missing file is one line and exit status 2, before any workdir exists. absl's
`app.run` then runs the work (`i3d_jax.train.train_and_evaluate`) with its
logging.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from i3d_jax.cli.common import add_kernels_argument, add_multihost_arguments, start_distributed
from i3d_jax.configs import demo_config_path

OVERRIDES_HELP = ("--config.KEY=VALUE overrides a key of the config (every key is declared, "
                  "with its meaning, in experiments/default.py); a key it does not declare is "
                  "refused. --config takes a config by name (kinetics400_i3d:rgb,imagenet,gpu8) "
                  "or a file (path/to/NAME.py[:ARG]).")


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
                       help="NAME[:ARG] or path/to/NAME.py[:ARG] (default: synthetic_demo, the "
                            "main job)")
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved config (JSON, every key) and exit, touching "
                            "no data and no device")
    add_multihost_arguments(train)
    train.set_defaults(func=run_train, takes_config_overrides=True)

    evaluate = subparsers.add_parser(
        "eval", help="evaluate a training workdir's checkpoint on its config's eval split",
        description="Evaluate the latest (or --step) checkpoint of a training workdir with the "
                    "config it was trained with (its config.json).",
        epilog=OVERRIDES_HELP)
    evaluate.add_argument("--workdir", required=True, help="a training run's directory")
    evaluate.add_argument("--config", default=None,
                          help="NAME[:ARG] or a file, instead of the workdir's config.json")
    evaluate.add_argument("--verbose", action="store_true",
                          help="keep the libraries' INFO lines (Orbax, TFDS) in the output")
    evaluate.add_argument("--step", type=int, default=None,
                          help="the checkpoint's step (default: the latest)")
    evaluate.add_argument("--fuse", nargs="+", default=None, metavar="OTHER_WORKDIR",
                          help="average the logits of other runs' latest checkpoints on their "
                               "own configs' eval splits with this one's, video by video (an "
                               "RGB run with a flow run: the paper's two-stream test)")
    add_kernels_argument(evaluate)
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


def with_overrides(config, args):
    """`config` with the command line's `--config.KEY=VALUE` overrides applied
    (ml_collections' parsers, on a flag set of our own); one-line errors."""
    import difflib

    from absl import flags
    from ml_collections import config_flags

    argv = ["i3d-jax " + args.command, *args.config_overrides]
    flag_values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict("config", config, "the run's config",
                                        flag_values=flag_values, sys_argv=argv,
                                        lock_config=True)
        rest = flag_values(argv)
    except AttributeError as error:  # a key the config does not declare
        key = next((a.split("=")[0].removeprefix("--config.") for a in argv[1:]
                    if a.split("=")[0].removeprefix("--config.").split(".")[-1]
                    in str(error)), str(error))
        close = difflib.get_close_matches(key, sorted(_keys(config)), n=1)
        raise ValueError(f"--config.{key}: not a config key"
                         + (f" (did you mean --config.{close[0]}?)" if close else "")
                         + "; experiments/default.py declares them all") from None
    except flags.Error as error:
        raise ValueError(str(error).splitlines()[0]) from None
    if len(rest) > 1:
        raise ValueError(f"unrecognized arguments: {' '.join(rest[1:])}")
    return flag_values.config


def _keys(config, prefix=""):
    for key, value in config.items():
        if hasattr(value, "items"):
            yield from _keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def run_config(args, default_spec):
    """The config of `--config` (or `default_spec`) with the overrides, checked."""
    from i3d_jax.configs import load_config
    from i3d_jax.train import check_config

    config = with_overrides(load_config(args.config or default_spec), args)
    check_config(config)
    return config


def _absl_run(main, args) -> int:
    """`main()` under absl's `app.run` (its logging), the config already parsed."""
    from absl import app

    result = {}

    def wrapped(argv_rest):
        del argv_rest
        result["code"] = main()

    try:
        app.run(wrapped, argv=["i3d-jax " + args.command])
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    return result.get("code", 0)


def run_train(args) -> int:
    config = run_config(args, demo_config_path())
    if args.print_config:
        print(config.to_json_best_effort(indent=2, sort_keys=True))
        return 0
    start_distributed(args)

    def main():
        import jax
        from absl import logging

        from i3d_jax.train import train_and_evaluate
        from i3d_jax.train.workdir import quiet_library_logs

        quiet_library_logs()  # before JAX starts: it logs the backends it did not find
        if jax.process_index() > 0:
            logging.set_verbosity(logging.WARNING)  # process 0 speaks for the job
        train_and_evaluate(config, args.workdir)
        return 0

    return _absl_run(main, args)


def run_eval(args) -> int:
    if args.config:
        config = run_config(args, None)
    else:
        config = with_overrides(config_from_json(Path(args.workdir) / "config.json"), args)
    # What the training run computed with is no constraint here (config.json holds
    # what it resolved to there): this process chooses its own.
    config.model.kernels = args.kernels

    def main():
        from i3d_jax import evaluation
        from i3d_jax.evaluation import prediction_metrics, stream_top1_text
        from i3d_jax.train import load_run_for_eval
        from i3d_jax.train.workdir import quiet_library_logs

        if not args.verbose:
            quiet_library_logs()
        run, variables, step = load_run_for_eval(config, args.workdir, args.step)
        num_classes = run.metadata.num_classes
        class_names = run.metadata.labels or [str(c) for c in range(num_classes)]
        predictions = run.evaluator.predict(variables)
        record = {"step": step}
        if args.fuse:
            runs, names = [predictions], [args.workdir]
            for other in args.fuse:
                other_config = config_from_json(Path(other) / "config.json")
                other_config.model.kernels = args.kernels
                other_run, other_variables, _ = load_run_for_eval(other_config, other)
                runs.append(other_run.evaluator.predict(other_variables))
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

    return _absl_run(main, args)
