"""PNG writing without PIL: a valid file whose decoded pixels equal the array."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from vcl_infer.search.png import PNG_SIGNATURE, write_png


def decode_png(data: bytes) -> np.ndarray:
    """Minimal reader for what write_png emits: 8-bit RGB, no interlace, filter 0 rows; checks CRCs."""
    assert data[:8] == PNG_SIGNATURE
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour, interlace) == (8, 2, 0) and b"IEND" in chunks
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3)


def test_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(7, 11, 3), dtype=np.uint8)
    path = write_png(tmp_path / "x.png", image)
    assert np.array_equal(decode_png(path.read_bytes()), image)
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", image.astype(np.float32))
