"""The ``stream_node`` process: the ``rats_stream`` node, its executor, signals and exit codes.

The process handles SIGINT/SIGTERM itself instead of rclpy: rclpy's handlers shut the context
down at once, from their own thread, racing the executor (``RCLError: failed to initialize wait
set``) and the captioner publishing the clip it finishes. Here the stop is ordered: executor,
then threads (the clip in flight is stored and published), then the context.

Exit codes: 0 after a signal, 1 when autostart could not configure/activate or a callback
failed (a launch ``respawn`` or systemd restart then sees it), 2 for parameters refused at
startup or a configure refused on a setting (a ConfigError, e.g. a database that refuses the
store URL's password).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from rats_ros.errors import ConfigError
from rats_ros.ros.node import NODE_NAME, StreamNode


def main(args=None) -> int:
    """Run the node until SIGINT/SIGTERM (see the module docstring).

    :returns: 0 after a signal, 1 when autostart could not configure/activate, 2 for parameters
        refused at startup.
    """
    signals = _StopSignals()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = StreamNode()
    except ConfigError as error:
        print(f"[{NODE_NAME}] invalid parameters: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    # ask_video (service and action) holds up to question_queue_size callbacks at once (one
    # answering, the rest waiting their turn); four more threads keep lifecycle, parameters,
    # diagnostics, the image callbacks and the action's goal / cancel / result requests served
    # meanwhile.
    threads = node.get_parameter("question_queue_size").value + 4
    executor = MultiThreadedExecutor(num_threads=threads)
    executor.add_node(node)
    _start_executor_threads(executor, threads)
    spinner = _Spinner(executor, node.get_logger())
    code = 0
    try:
        code = _run(node, spinner, signals)
    except KeyboardInterrupt:  # raised by _StopSignals while loading
        pass
    finally:
        signals.abort_loading = False
        spinner.stop()
        node.release()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


def _run(node: StreamNode, spinner: _Spinner, signals: _StopSignals) -> int:
    """Autostart, then spin until a signal. :returns: the exit code."""
    signals.abort_loading = True  # Ctrl-C while loading a big model must not wait for it
    if signals.received is not None:  # it came while the node was being constructed
        return 0
    autostart = node.get_parameter("autostart").value
    started = not autostart or node.start()
    signals.abort_loading = False
    if signals.received is not None:  # its KeyboardInterrupt was swallowed (e.g. by a __del__)
        return 0
    if not started:
        code = 2 if node.configure_refused else 1  # 2: a setting to fix, not worth a restart
        node.get_logger().error(f"autostart failed (see above); exiting with code {code}")
        return code
    if not autostart:
        node.get_logger().info("unconfigured, waiting for lifecycle transitions "
                               "(autostart is false)")
    node.on_stop = signals.wake
    spinner.start(on_exit=signals.wake)
    signals.wait(until=lambda: spinner.ended or node.fatal_error or node.finalized)
    if node.fatal_error:
        node.get_logger().fatal(f"exiting with code 1: {node.fatal_error}")
        return 1
    if spinner.error:
        node.get_logger().fatal(f"exiting with code 1: the executor stopped on {spinner.error}")
        return 1
    return 0


def _start_executor_threads(executor: MultiThreadedExecutor, count: int) -> None:
    """Start all of the executor's threads now rather than on demand: a thread that cannot be
    started later (the process short of memory) would otherwise end the executor."""
    pool = getattr(executor, "_executor", None)  # rclpy's ThreadPoolExecutor
    if pool is None:
        return
    all_started = threading.Barrier(count + 1)
    for _ in range(count):  # each waits at the barrier, so none is idle when the next comes
        pool.submit(all_started.wait)
    all_started.wait(timeout=30)


class _StopSignals:
    """SIGINT/SIGTERM without exceptions where they could break things.

    The first signal is recorded in :attr:`received`; while :attr:`abort_loading` it also raises
    KeyboardInterrupt in the main thread. Python's wakeup fd wakes :meth:`wait` at once, even
    while the main thread is blocked. Later signals only say that the node is stopping: a second
    Ctrl-C must not break the clean stop (the clip being captioned is finished and stored);
    SIGKILL still ends the process at once, losing nothing committed.
    """

    def __init__(self):
        self.received = None
        self.abort_loading = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        signal.set_wakeup_fd(self._wake_write)  # Python's C-level handler writes here
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.received is not None:
            print(f"[{NODE_NAME}] already stopping: finishing the clip being captioned",
                  file=sys.stderr)
            return
        self.received = signum
        if self.abort_loading:
            self.abort_loading = False
            raise KeyboardInterrupt

    def wake(self) -> None:
        """Wake :meth:`wait` (any thread)."""
        os.write(self._wake_write, b"\0")

    def wait(self, until) -> None:
        """Block (main thread) until a signal came or ``until()`` is true after a :meth:`wake`."""
        while self.received is None and not until():
            os.read(self._wake_read, 1)


class _Spinner:
    """Spins the executor in a thread, so that the main thread stays free for signals."""

    def __init__(self, executor, logger):
        self._executor, self._logger = executor, logger
        self._thread = None
        self.error = ""  # why the executor stopped, when it was not asked to
        self.ended = False

    def start(self, on_exit) -> None:
        """Spin in a thread; ``on_exit()`` is called when it ends. A callback's bug or a fault
        of the executor itself (e.g. no thread can be started) ends it with :attr:`error` set;
        its traceback is logged at debug level (``--ros-args --log-level debug``)."""
        def spin():
            try:
                self._executor.spin()
            except ExternalShutdownException:
                pass
            except Exception as error:  # noqa: BLE001 - the executor thread's boundary
                self.error = f"{type(error).__name__}: {error}"
                self._logger.debug(traceback.format_exc())
            finally:
                self.ended = True
                on_exit()

        self._thread = threading.Thread(target=spin, name="rats-executor")
        self._thread.start()

    def stop(self) -> None:
        """Stop the executor; callbacks running are finished first."""
        self._executor.shutdown()
        if self._thread is not None:
            self._thread.join()


if __name__ == "__main__":
    sys.exit(main())
