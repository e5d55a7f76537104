"""What every worker process needs, whatever started it (process, torch or Ray workers):
the task shipped by value, one native thread per library, and a clear refusal when a
script without a main guard runs again inside a worker.

Tasks travel as cloudpickle bytes: a dataset, transform or lambda defined in a notebook or
in the main script is pickled by value, so it runs in a spawned worker that cannot import
``__main__``; anything importable is still pickled by reference.
"""

from __future__ import annotations

import os
import signal
import sys

# A worker that found itself re-running the main script exits with this code, which the
# consumer turns into REIMPORTED_MAIN.
REIMPORTED_MAIN_EXIT = 86
REIMPORTED_MAIN = (
    "the script's top level ran again in a worker process and started a Loader there: "
    "with the {method!r} start method each worker process imports the main script, so the "
    'code outside `if __name__ == "__main__":` runs again in every worker. Put the '
    "training loop under `if __name__ == \"__main__\":` (or use backend 'thread')"
)


class WorkerSetupError(RuntimeError):
    """A worker could not load its task (an import or unpickling failure)."""


def pack(task) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(task)


def unpack(data: bytes):
    """The task from ``pack``; a failure is a ``WorkerSetupError`` that says what failed."""
    import pickle

    try:
        return pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the consumer must see it
        raise WorkerSetupError(
            f"a worker could not load the dataset and transform it was sent: "
            f"{type(exc).__name__}: {exc} (is every module they use importable in the "
            "worker, and installed on its machine?)"
        ) from exc


# The environment variables OpenMP and the BLAS libraries read when they load.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def check_threads(threads) -> int:
    """The ``threads`` backend option: native threads per library in each worker (>= 1)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(
            f"threads (native threads per library in each worker) must be an int >= 1; "
            f"got {threads!r}"
        )
    return threads


def set_up(threads: int = 1, ignore_sigint: bool = True) -> None:
    """Start of every worker process (process, torch and Ray workers all call it):
    ``threads`` native threads per library, since the workers are the parallelism (five
    workers each starting a thread per core oversubscribe the cores), and Ctrl-C left to
    the consumer.

    OpenCV and torch are set directly; OpenMP and BLAS through their environment variables,
    which a library loaded later in the worker (and any process it starts) reads; a BLAS
    already loaded (numpy's, before the worker's code runs) is limited too where
    threadpoolctl is installed."""
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        import threadpoolctl
    except ImportError:
        return
    threadpoolctl.threadpool_limits(threads)


def refuse_reimported_main() -> None:
    """Called when a Loader would start while this process is still being spawned: the main
    script is being imported into a worker. Say why on stderr and exit with the code the
    consumer recognises."""
    # Only spawn and forkserver re-import the main script, and the child's default context
    # says nothing about the one its parent chose: the command line that started it does.
    method = "forkserver" if "forkserver" in " ".join(sys.orig_argv) else "spawn"
    print(f"augment: {REIMPORTED_MAIN.format(method=method)}", file=sys.stderr, flush=True)
    os._exit(REIMPORTED_MAIN_EXIT)
