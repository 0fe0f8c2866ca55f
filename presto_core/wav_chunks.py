"""A private RIFF chunk for a WAV file's generation settings.

libsndfile keeps a WAV comment (RIFF INFO ICMT) of at most 2,045 bytes and silently drops a longer
one, so a valid request with a long non-ASCII prompt lost its settings. The settings therefore also
go into a chunk of their own, ``prst`` (UTF-8 JSON, no size limit short of the 4 GiB RIFF limit),
appended after the audio: readers that do not know it skip it, as RIFF requires.
"""

from __future__ import annotations

import os
import struct

CHUNK_ID = b"prst"


def append_chunk(path: str | os.PathLike, data: bytes, chunk_id: bytes = CHUNK_ID) -> None:
    """Append one chunk (id, little-endian size, data, pad byte to an even length) to the RIFF file
    at ``path`` and update the RIFF size. Raises ValueError if the file is not RIFF/WAVE."""
    with open(path, "r+b") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"{path}: not a RIFF/WAVE file")
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end % 2:  # chunks start on even offsets
            f.write(b"\0")
            end += 1
        f.write(chunk_id + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b""))
        size = f.tell() - 8
        f.seek(4)
        f.write(struct.pack("<I", size))


def read_chunk(path: str | os.PathLike, chunk_id: bytes = CHUNK_ID) -> bytes | None:
    """The data of the first ``chunk_id`` chunk of the RIFF/WAVE file at ``path``, or None when the
    file is not RIFF/WAVE or has no such chunk (a truncated chunk counts as none)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        total = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= total:
            f.seek(pos)
            cid, size = struct.unpack("<4sI", f.read(8))
            if cid == chunk_id:
                data = f.read(size)
                return data if len(data) == size else None
            pos += 8 + size + (size % 2)
    return None
