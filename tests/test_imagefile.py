"""Image files to float RGB: every bit depth scaled by its own range, EXIF orientation, ICC
colour, transparency, and the pixel limit checked before decoding. Each reference is computed
here from the values written into the file, not by Pillow's conversions."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_guard.core.errors import BadInput
from cutout_guard.core.imagefile import read_image

EIGHT_BIT = 1 / 255


def write_png(path: Path, samples: np.ndarray, *, bits: int, colour_type: int, extra: bytes = b"", width: int | None = None) -> Path:
    """A PNG written byte by byte (filter 0 on every row), so no Pillow encoder shapes the test file."""
    height, width = samples.shape[0], width or samples.shape[1]
    dtype = ">u2" if bits == 16 else "u1"
    raw = b"".join(b"\x00" + samples[y].astype(dtype).tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve (IEC 61966-2-1)."""
    linear = np.asarray(linear, dtype=np.float64)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def linear_srgb_icc() -> bytes:
    """An ICC v2 RGB display profile with sRGB's (D50-adapted) primaries and linear tone curves."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z) -> bytes:
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    text = b"linear sRGB\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    linear = b"curv" + b"\0" * 4 + struct.pack(">I", 0)  # no entries: the identity curve
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", linear),
        (b"gTRC", linear),
        (b"bTRC", linear),
        (b"cprt", b"text" + b"\0" * 4 + b"none\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size) + b"none" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp"
        + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 4 + b"\0" * 44
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    """Regression: a 16-bit grey PNG came out all white (values clipped at 255)."""
    values = np.array([[0, 1000, 16384, 32768], [40000, 50000, 65000, 65535]], dtype=np.uint16)
    rgb = read_image(write_png(tmp_path / "grey16.png", values, bits=16, colour_type=0))
    expected = values / 65535.0
    assert rgb.shape == (2, 4, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb, np.repeat(expected[..., None], 3, axis=-1), atol=1e-6)


def test_16_bit_rgb_png_is_scaled_to_0_1(tmp_path):
    values = np.random.default_rng(0).integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    rgb = read_image(write_png(tmp_path / "rgb16.png", values, bits=16, colour_type=2))
    np.testing.assert_allclose(rgb, values / 65535.0, atol=EIGHT_BIT)  # Pillow keeps 8 bits of each


def test_16_bit_rgba_png_is_composited_on_white(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.integers(0, 65536, (4, 6, 4)).astype(np.uint16)
    rgb = read_image(write_png(tmp_path / "rgba16.png", values, bits=16, colour_type=6))
    colour, alpha = values[..., :3] / 65535.0, values[..., 3:] / 65535.0
    np.testing.assert_allclose(rgb, colour * alpha + (1 - alpha), atol=2 * EIGHT_BIT)


def test_float_tiff_in_0_1_is_read_as_is(tmp_path):
    """Regression: a float TIFF with values 0..1 came out black (rounded to 0 or 1 of 255)."""
    values = np.linspace(0.0, 1.0, 6 * 5, dtype=np.float32).reshape(5, 6)
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    rgb = read_image(path)
    np.testing.assert_allclose(rgb, np.repeat(values[..., None], 3, axis=-1), atol=1e-7)


def test_float_tiff_outside_0_1_is_clipped_and_nan_is_refused(tmp_path):
    values = np.array([[-0.5, 0.25, 1.5]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "wide.tif")
    np.testing.assert_allclose(read_image(tmp_path / "wide.tif")[..., 0], [[0.0, 0.25, 1.0]])
    Image.fromarray(np.array([[0.5, np.nan]], dtype=np.float32), mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(BadInput, match="nan.tif.*NaN"):
        read_image(tmp_path / "nan.tif")


def test_32_bit_integer_tiff_is_scaled_by_its_bits(tmp_path):
    values = np.array([[0, 2**16, 2**30, 2**31 - 1]], dtype=np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "int32.tif")
    np.testing.assert_allclose(read_image(tmp_path / "int32.tif")[..., 0], values / (2**32 - 1), atol=1e-6)


def test_1_bit_png_is_black_and_white(tmp_path):
    bits = np.array([[0, 1, 1, 0, 1, 0, 0, 1, 1], [1, 1, 0, 0, 0, 0, 1, 1, 0]], dtype=np.uint8)
    packed = np.packbits(bits, axis=1)  # PNG packs 1-bit rows most significant bit first
    rgb = read_image(write_png(tmp_path / "one.png", packed, bits=1, colour_type=0, width=9))
    assert rgb.shape == (2, 9, 3)
    np.testing.assert_array_equal(rgb[..., 0], bits.astype(np.float32))


def test_palette_with_a_transparent_entry_is_white_where_transparent(tmp_path):
    palette = np.array([[200, 10, 30], [0, 0, 0], [5, 120, 250]], dtype=np.uint8)
    indices = np.array([[0, 1, 2], [1, 1, 0]], dtype=np.uint8)
    plte = palette.tobytes()
    trns = bytes([255, 0, 255])  # entry 1 fully transparent
    extra = b""
    for kind, data in ((b"PLTE", plte), (b"tRNS", trns)):
        extra += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rgb = read_image(write_png(tmp_path / "palette.png", indices, bits=8, colour_type=3, extra=extra))
    expected = palette[indices] / 255.0
    expected[indices == 1] = 1.0
    np.testing.assert_allclose(rgb, expected, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    values = np.random.default_rng(2).integers(0, 256, (3, 5, 3)).astype(np.uint8)
    image = Image.fromarray(values)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "rotated.png", exif=exif.tobytes())
    rgb = read_image(tmp_path / "rotated.png")
    np.testing.assert_allclose(rgb, np.rot90(values, k=-1) / 255.0, atol=1e-6)


def test_icc_profile_is_converted_to_srgb(tmp_path):
    """A linear-light profile: stored value v must become sRGB's encoding of v, not v itself."""
    levels = np.array([0, 16, 64, 128, 192, 255], dtype=np.uint8)
    values = np.zeros((1, len(levels), 3), np.uint8)
    values[0, :, 0] = values[0, :, 1] = values[0, :, 2] = levels  # greys: the primaries cancel out
    Image.fromarray(values).save(tmp_path / "linear.png", icc_profile=linear_srgb_icc())
    rgb = read_image(tmp_path / "linear.png")
    expected = srgb_encode(levels / 255.0)
    np.testing.assert_allclose(rgb[0, :, 1], expected, atol=3 * EIGHT_BIT)
    assert abs(rgb[0, 3, 1] - 128 / 255) > 0.15  # not left as stored


def test_pixel_limit_applies_before_decoding_and_names_one_limit(tmp_path):
    """Regression: the message mixed Pillow's limit (twice --max-pixels) with the pack's own."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    fake = b"\x89PNG\r\n\x1a\n"
    for kind, data in ((b"IHDR", header), (b"IDAT", zlib.compress(b"\0" * 64)), (b"IEND", b"")):
        fake += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path = tmp_path / "claims_10G_pixels.png"
    path.write_bytes(fake)  # 64 bytes of pixel data: decoding would fail as "damaged"
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(BadInput) as caught:
        read_image(path, max_pixels=1_000_000)
    message = str(caught.value)
    assert "100000×100000 = 10,000,000,000 pixels" in message and "1,000,000" in message and "--max-pixels" in message
    assert "2,000,000" not in message and "decompression" not in message.lower()
    assert Image.MAX_IMAGE_PIXELS == limit


def test_an_image_far_over_pillows_own_limit_reads_when_allowed(tmp_path):
    Image.new("1", (3000, 3000), 1).save(tmp_path / "wide.png")
    Image.MAX_IMAGE_PIXELS, previous = 1_000_000, Image.MAX_IMAGE_PIXELS
    try:
        rgb = read_image(tmp_path / "wide.png", max_pixels=9_000_000)
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    assert rgb.shape == (3000, 3000, 3) and rgb.min() == 1.0
