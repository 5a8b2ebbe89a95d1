"""Ctrl-C and SIGTERM, delivered where the engine can act on them (docs/design.md, "Signals").

Python turns SIGINT into ``KeyboardInterrupt`` at whatever bytecode runs when the signal
arrives. Inside a finalizer (an h5py object being freed, a weakref callback) such an exception
is printed as "Exception ignored" and lost, and the run goes on as if nothing was pressed. So
while the engine advances runs (:func:`deferred`), the handler only records the signal, and the
engine raises it at its next check between kernel calls (:func:`check`, at most a fraction of a
second away). A second signal while one is pending is raised at once (the user insists).

SIGTERM (what ``kill``, ``timeout``, ``scancel`` and batch systems send) is handled like Ctrl-C,
as :class:`Terminated`, once the command line has called :func:`install`; the library alone
leaves SIGTERM as it finds it (a Dask worker's nanny uses it).
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by SIGTERM."""


_pending: int | None = None  # the signal received while deferring, not yet raised
_deferring = 0


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated("terminated (SIGTERM)") if signum == signal.SIGTERM else KeyboardInterrupt()


def handler(signum, frame) -> None:
    """Record the signal while the engine defers it, else (or at the second one) raise it here."""
    global _pending
    if _deferring and _pending is None:
        _pending = signum
        return
    _pending = None
    raise _exception(signum)


def check() -> None:
    """Raise the signal recorded while deferring, if any (called by the engine between kernel calls)."""
    global _pending
    if _pending is not None:
        signum, _pending = _pending, None
        raise _exception(signum)


def install() -> None:
    """For the command line: SIGINT and SIGTERM both go through :func:`handler`. SIGINT is taken
    even when inherited as ignored (a process started with ``&`` from a script), so Ctrl-C and
    ``kill -INT`` always work."""
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def deferred():
    """Inside, a signal is recorded and raised by :func:`check`. In the main thread with Python's
    default Ctrl-C handler (a script, a notebook), :func:`handler` takes SIGINT for the duration."""
    global _deferring
    previous = None
    if threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGINT)
        if current is signal.default_int_handler:
            previous = current
            signal.signal(signal.SIGINT, handler)
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if not _deferring:
            check()  # a signal still pending wins over any other exception on its way out
