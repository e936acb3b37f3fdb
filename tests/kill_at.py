"""`i3d-jax` that SIGKILLs itself at a chosen moment of a training run, for the
fault tests (test_faults.py) and benchmarks/kill_anywhere.py:

    python tests/kill_at.py MOMENT N train --workdir DIR --config...

MOMENT N: `save` once the Nth checkpoint's synchronous part is written (the
arrays still being written in the background, nothing committed); `metrics`
halfway through writing the Nth row of metrics.jsonl; `eval` as the Nth
evaluation starts; `final-wait` as the run waits for its last save to finish
(N ignored). A moment that never comes lets the run finish.

The trainer holds no hook for this: the patches below wrap its own functions.
"""
import json
import os
import signal
import sys


def kill():
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def patch(moment: str, n: int) -> None:
    calls = [0]

    def nth() -> bool:
        calls[0] += 1
        return calls[0] == n

    if moment == "save":
        from i3d_jax import checkpoints

        save = checkpoints.InputIteratorHandler.save

        def save_then_kill(self, directory, args):
            save(self, directory, args)
            if nth():
                kill()

        checkpoints.InputIteratorHandler.save = save_then_kill
    elif moment == "metrics":
        from i3d_jax.train import workdir

        write = workdir.MetricsLog.write

        def half_a_row_then_kill(self, step, kind, values):
            if self.enabled and nth():
                row = json.dumps({"step": step, "kind": kind, **values})
                with open(self.path, "a") as f:
                    f.write(row[: len(row) // 2])
                kill()
            write(self, step, kind, values)

        workdir.MetricsLog.write = half_a_row_then_kill
    elif moment == "eval":
        from i3d_jax.evaluation import Evaluator

        evaluate = Evaluator.evaluate

        def kill_then_evaluate(self, *args, **kwargs):
            if nth():
                kill()
            return evaluate(self, *args, **kwargs)

        Evaluator.evaluate = kill_then_evaluate
    elif moment == "final-wait":
        import orbax.checkpoint as ocp

        wait = ocp.CheckpointManager.wait_until_finished

        def kill_in_the_final_wait(self):
            if sys._getframe(1).f_code.co_name == "_train_and_evaluate":
                kill()
            return wait(self)

        ocp.CheckpointManager.wait_until_finished = kill_in_the_final_wait
    else:
        raise SystemExit(f"kill_at.py: unknown moment {moment!r}")


if __name__ == "__main__":
    patch(sys.argv[1], int(sys.argv[2]))
    from i3d_jax.cli import main

    main(sys.argv[3:])
