"""A little disk space kept in reserve, so a full disk can still be reported in ``status``.

When the disk fills up in the middle of a sync, writing the failure to the store needs
room too. Each sync makes sure ``DATA_DIR/space-reserve`` (1 MiB of zeros) exists while
there is space; when recording a result fails for lack of space, the reserve is deleted
and the write tried again. The next sync with room to spare makes it again.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from agent.files import write_private

RESERVE_NAME = "space-reserve"
RESERVE_SIZE = 1024 * 1024

log = logging.getLogger("retainer.sync")


def ensure_reserve(data_dir: Path) -> None:
    """Create the reserve file if it is missing and there is room for it."""
    path = data_dir / RESERVE_NAME
    try:
        if path.stat().st_size == RESERVE_SIZE:
            return
    except FileNotFoundError:
        pass
    except OSError:
        return
    with contextlib.suppress(OSError):
        write_private(path, bytes(RESERVE_SIZE))


def release_reserve(data_dir: Path) -> bool:
    """Delete the reserve to make room; true if there was one."""
    try:
        (data_dir / RESERVE_NAME).unlink()
    except OSError:
        return False
    log.warning("the disk of %s is full; used the space kept in reserve to record it",
                data_dir)
    return True
