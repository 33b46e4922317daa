"""One writer per folder: an exclusive flock on a lock file inside it, the holder named in the file.

The kernel drops a flock when its process ends, `kill -9` and power loss included, so a crashed writer never
leaves the folder locked and nothing has to judge whether a lock is stale; the file itself stays. A second
writer is refused at once (not queued), with the holder's pid, host and start time read from the file.
Used for the store (pipeline.schema.writer_lock) and the training run folder (trainer.loop).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def describe_holder(text: str) -> str:
    """`run <id> (pid <pid> on <host>, since <time>)` (no `run <id>` when the holder has none) from a lock
    file's content, or `another process` when it is not what `single_writer` writes."""
    try:
        h = json.loads(text)
        where = f"pid {h['pid']} on {h['host']}, since {h['started']}"
    except (json.JSONDecodeError, TypeError, KeyError):
        return "another process"
    return f"run {h['run_id']} ({where})" if h.get("run_id") else where


@contextmanager
def single_writer(lock_path: str | os.PathLike, refused: Callable[[str], Exception],
                  **holder: Any) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (created if absent; its folder must exist) for the body.

    When another process holds it, raise `refused(describe_holder(...))` at once. `holder` (e.g. run_id=...)
    is written to the file with our pid, host and start time, for the message a second writer gets."""
    path = Path(lock_path)
    try:  # never through a link: the file is truncated and written, and must be the folder's own
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise OSError(f"{path}: cannot open the lock file ({exc.strerror}); not a lock file of ours?") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.close(fd)
        raise refused(describe_holder(text)) from None
    try:
        info = {**holder, "pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
