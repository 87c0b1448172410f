"""One identity for a video file, shared by the encoder cache, the server and streaming sessions.

It must stay the same while a file grows (a recording being written, a download in progress),
so that frames already encoded are reused, and change when the file's content is replaced.
So it is not a hash of the whole file (which changes with every appended byte and costs a
full read per request) but of what a growing file keeps: the real path, the device and
inode, and the first ``HEAD_BYTES`` bytes (the container header and first packets). A file
replaced by another (a new inode, as editors and ``mv`` give) or rewritten from its start
(different first bytes) gets a new identity. Reads at most ``HEAD_BYTES`` bytes.
"""

from __future__ import annotations

import hashlib
import os

HEAD_BYTES = 4096


def video_identity(path: str | os.PathLike) -> str | None:
    """A short hex identity for the file at ``path``; None when it cannot be read."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        with open(real, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError:
        return None
    h = hashlib.sha256()
    h.update(f"{real}\0{st.st_dev}\0{st.st_ino}\0".encode("utf-8", "surrogateescape"))
    h.update(head)
    return h.hexdigest()[:32]
