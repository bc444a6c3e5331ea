"""One writer per workdir: an OS file lock on ``<workdir>/.lock``, held for the life of a run or a study stage.

The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the holder exits or dies (kill -9
included): there is no stale lock to clean up. The file records the holder's pid, host and start time, which the
refusal quotes. Re-entrant within one process (a study holds its workdir while its runs lock their own, and
``--mode=run`` may lock a workdir the training loop then locks again). On network filesystems flock is only as good
as the filesystem's lock support (NFSv4 has it; some FUSE mounts do not).
"""

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator

from gdc.errors import ConfigError

LOCK_FILE = ".lock"
_held: dict[str, int] = {}  # real path of a lock file -> nesting depth, in this process


@contextlib.contextmanager
def hold(workdir: str, *, enabled: bool = True) -> Iterator[None]:
    """Holds ``workdir``'s lock for the ``with`` block; raises ConfigError naming the holder if another has it.

    ``enabled=False`` (every process but process 0 of a multi-process run) does nothing.
    """
    if not enabled:
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        since = f" since {holder['started']}" if "started" in holder else ""
        raise ConfigError(
            f"--workdir={workdir!r} is in use by {who}{since} (lock file {path}); two runs in one workdir would mix "
            "their checkpoints and metrics. Wait for it to finish, stop it, or choose another --workdir."
        ) from None
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
