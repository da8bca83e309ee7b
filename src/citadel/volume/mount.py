"""Mount table entries: which host-visible paths a volume serves inside the engine (engine-safe).

The engine's file shield keeps one `VolumeMount` per declared volume and, for every path a
program passes to ``open()`` or an ``os`` function, asks ``mount.relpath(path)``: a string means
"route this call to ``mount.volume`` with that volume-relative path", None means "not mine".
"""

from __future__ import annotations

import os
from typing import Any, Optional

from citadel.volume.volume import Volume


class VolumeMount:
    """A volume seen at ``mount_path`` (an absolute path inside the program's view)."""

    def __init__(self, mount_path: str, volume: Volume) -> None:
        if not os.path.isabs(mount_path):
            raise ValueError(f"a volume's mount path must be absolute, not {mount_path!r}")
        self.mount_path = os.path.normpath(mount_path)
        self.volume = volume

    def relpath(self, path: Any, cwd: Optional[str] = None) -> Optional[str]:
        """Volume-relative path of ``path`` (str, bytes or path-like), or None if outside the mount.

        Relative paths are taken from ``cwd`` (default: the process's working directory). "..",
        "." and repeated slashes are resolved lexically; volumes hold no symbolic links. A
        trailing slash is kept so "file/" fails as it does on a plain directory.
        """
        path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return None
        full = path if os.path.isabs(path) else os.path.join(cwd or os.getcwd(), path)
        norm = os.path.normpath(full)
        if norm == self.mount_path:
            rel = ""
        elif norm.startswith(self.mount_path.rstrip("/") + "/"):
            rel = norm[len(self.mount_path.rstrip("/")) + 1 :]
        else:
            return None
        return rel + "/" if path.endswith("/") and rel else rel
