"""A machine under ``--gdb``: run it, stop it when gdb connects, serve gdb, run on when gdb leaves.

As with QEMU's ``-gdb``/``-s``: the machine runs until a gdb connects (then it
stops, as gdb expects of a target it attaches to), or starts stopped with
``-S``; after gdb detaches or goes away it runs on and another gdb may connect;
``kill`` from gdb ends it.  :func:`debug_session` returns the final
:class:`~.target.Stop` (the guest's exit, the machine's end, or the kill).
"""

from __future__ import annotations

from .gdbstub import GdbStub, Listener
from .target import Stop, Target


def debug_session(target: Target, listener: Listener, *, start_stopped: bool, on_connect=None) -> Stop:
    stopped = start_stopped
    while True:
        if not stopped:
            stop = target.resume(None, listener.pending)
            if stop.kind in ("exited", "ended"):
                return stop
        conn = listener.accept()
        if on_connect is not None:
            on_connect()
        how = GdbStub(target, conn, Stop("interrupt", thread=target.threads()[0])).serve()
        if how == "killed":
            return Stop("ended", detail="killed from gdb")
        ended = getattr(target, "ended", None)
        if how == "ended" and ended is not None:
            return ended
        stopped = False
