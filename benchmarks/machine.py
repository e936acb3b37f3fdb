"""What a benchmark records about the machine it ran on, and how it times calls."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa() -> list[str]:
    """The vector extensions that decide convolution speed on a CPU (from /proc/cpuinfo)."""
    from i3d_jax.kernels.host import cpu_flags

    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
              "amx_bf16", "amx_tile")
    flags = cpu_flags()
    return [f for f in wanted if f in flags]


def machine_record() -> dict:
    return {"cpu": cpu_model(), "isa": isa(), "cores_available": available_cores(),
            "platform": platform.platform()}


def limit_tf_threads(threads: int):
    """TensorFlow on `threads` threads for its ops (set before it runs any); returns tf."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def time_calls(fn, iters: int) -> list[float]:
    """Seconds per call; fn must block until its result is ready."""
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def tf_decode_rate(decode, encoded, repeats: int = 3, cpu: bool = False):
    """Items/s of `decode` over `encoded` (a list of bytes, or of tuples of per-item
    arguments) one after another inside one tf.function (no Python between items), on
    however many threads TF was given; the best of `repeats` timed passes. `cpu`: also
    items per CPU-second of the process (its best pass), as (per second, per CPU-second)."""
    import tensorflow as tf

    columns = list(zip(*encoded)) if isinstance(encoded[0], tuple) else [encoded]
    items = [tf.constant(list(column)) for column in columns]
    count = len(encoded)

    @tf.function
    def run():
        def body(i, total):
            frame = decode(*[item[i] for item in items])
            return i + 1, total + tf.reduce_sum(tf.cast(frame[0, 0], tf.int32))

        return tf.while_loop(lambda i, _: i < count, body, (0, 0), parallel_iterations=1)[1]

    run()  # trace
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run().numpy()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return (count / best, count / best_cpu) if cpu else count / best
