"""Is a WAV file whole? libsndfile reads a cut-off WAV without a word, so we look ourselves.

A RIFF WAV says in its ``data`` chunk header how many bytes of samples follow. A file cut
short (a copy stopped half-way, a recorder killed) holds fewer, and libsndfile quietly
returns what is there: the user would get an answer to half a question. Only plain RIFF
WAV is checked; other containers are left to libsndfile, which complains about damage in
the ones it cannot resync (FLAC, for one).
"""

from __future__ import annotations

import struct
from pathlib import Path

# Writers that stream without seeking back put one of these where the size belongs.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def truncation(path: Path) -> str | None:
    """Why ``path`` is a cut-off WAV, or None when it is whole or not a RIFF WAV."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        rate = block = 0
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk, length = struct.unpack("<4sI", f.read(8))
            if chunk == b"fmt " and length >= 16:
                _fmt, _channels, rate, _byte_rate, block = struct.unpack("<HHIIH", f.read(14))
            if chunk == b"data":
                have = size - offset - 8
                if length in _UNKNOWN_SIZES or have >= length:
                    return None
                if rate and block:
                    return (
                        f"file is cut short: it holds {have / block / rate:.2f} s of the "
                        f"{length / block / rate:.2f} s its header announces"
                    )
                return f"file is cut short: {have} of {length} bytes of audio data"
            offset += 8 + length + (length & 1)  # chunks are padded to an even size
    return None
