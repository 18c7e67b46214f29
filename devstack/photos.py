"""Test photos, made in memory: gradients and shapes, with a red marker in the displayed top-left.

Every helper returns the encoded file's bytes. `scene()` is what a viewer would display; helpers
taking an EXIF orientation store the pixels turned so that applying the orientation restores it.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image, ImageDraw

from devstack.sample_photos import stored_for_orientation
from functions.common.images import EXIF_ORIENTATION

MARKER = (255, 0, 0)


def scene(width: int = 1200, height: int = 800) -> Image.Image:
    """Green and blue gradients, a white disc, a dark bar, and a red square top-left."""
    vertical = Image.linear_gradient("L").resize((width, height))
    horizontal = vertical.transpose(Image.Transpose.ROTATE_90).resize((width, height))
    image = Image.merge("RGB", (Image.new("L", (width, height), 60), horizontal, vertical))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.4, height * 0.3, width * 0.6, height * 0.7), fill="white")
    draw.rectangle((width * 0.1, height * 0.8, width * 0.9, height * 0.9), fill=(20, 20, 20))
    marker = min(width, height) // 6
    draw.rectangle((0, 0, marker - 1, marker - 1), fill=MARKER)
    return image


def encode(image: Image.Image, format: str, **params: object) -> bytes:
    output = io.BytesIO()
    image.save(output, format, **params)
    return output.getvalue()


def oriented(
    format: str, orientation: int, width: int = 1200, height: int = 800, **params: object
) -> bytes:
    """A file that displays as `scene(width, height)` once its EXIF orientation is applied."""
    stored = stored_for_orientation(scene(width, height), orientation)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(stored, format, exif=exif.tobytes(), **params)


def jpeg(width: int = 1200, height: int = 800, orientation: int = 1, **params: object) -> bytes:
    return oriented("JPEG", orientation, width, height, quality=90, **params)


def progressive_jpeg() -> bytes:
    return jpeg(progressive=True)


def multi_picture_jpeg() -> bytes:
    """An MPO file, as stereo and some phone cameras write: the scene, then a flat blue picture."""
    second = Image.new("RGB", (1200, 800), (0, 0, 255))
    return encode(scene(), "MPO", save_all=True, append_images=[second])


def cmyk_jpeg(colour: tuple[int, int, int, int]) -> bytes:
    """Pillow writes CMYK the way Photoshop does: inverted, with an Adobe APP14 marker."""
    return encode(Image.new("CMYK", (600, 400), colour), "JPEG", quality=95)


def greyscale(format: str = "JPEG") -> bytes:
    return encode(scene().convert("L"), format)


def greyscale_alpha_png(grey: int, alpha: int) -> bytes:
    return encode(Image.new("LA", (600, 400), (grey, alpha)), "PNG")


def png_with_alpha(colour: tuple[int, int, int], alpha: int) -> bytes:
    """The left half fully transparent, the right half `colour` at `alpha`."""
    image = Image.new("RGBA", (600, 400), (*colour, 0))
    image.paste((*colour, alpha), (300, 0, 600, 400))
    return encode(image, "PNG")


def grey16_png(value: int) -> bytes:
    """A 16-bit greyscale PNG of one value (0-65535)."""
    return _raw_png(600, 400, bit_depth=16, colour_type=0, pixel=struct.pack(">H", value))


def rgb16_png(colour: tuple[int, int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG of one colour (each 0-65535)."""
    return _raw_png(600, 400, bit_depth=16, colour_type=2, pixel=struct.pack(">3H", *colour))


def palette_gif_with_transparency() -> bytes:
    """A palette GIF: the left half transparent, the right half red."""
    image = Image.new("P", (600, 400), 0)
    image.putpalette([0, 255, 0, 255, 0, 0])
    image.paste(1, (300, 0, 600, 400))
    return encode(image, "GIF", transparency=0)


def one_bit() -> bytes:
    """A 1-bit PNG: black on the left half, white on the right."""
    image = Image.new("1", (600, 400), 0)
    image.paste(1, (300, 0, 600, 400))
    return encode(image, "PNG")


def animated(format: str, colours: list[tuple[int, int, int]]) -> bytes:
    """One flat frame per colour; the first frame is `colours[0]`."""
    frames = [Image.new("RGB", (600, 400), colour) for colour in colours]
    return encode(frames[0], format, save_all=True, append_images=frames[1:], duration=100)


def with_icc_profile(colour: tuple[int, int, int], profile: bytes) -> bytes:
    return encode(Image.new("RGB", (600, 400), colour), "PNG", icc_profile=profile)


def adobe_rgb_like_profile() -> bytes:
    """A matrix/TRC ICC v2 profile with Adobe RGB (1998)'s primaries and gamma 563/256."""
    tags = {
        b"desc": _text_description("Adobe RGB-like test profile"),
        b"cprt": b"text\0\0\0\0No copyright, test data\0",
        b"wtpt": _xyz(0.9642, 1.0, 0.8249),
        b"rXYZ": _xyz(0.6097, 0.3111, 0.0195),
        b"gXYZ": _xyz(0.2053, 0.6257, 0.0609),
        b"bXYZ": _xyz(0.1492, 0.0632, 0.7446),
        b"rTRC": b"curv\0\0\0\0" + struct.pack(">IH2x", 1, 563),
    }
    tags[b"gTRC"] = tags[b"bTRC"] = tags[b"rTRC"]
    table_size = 4 + 12 * len(tags)
    offset, table, data = 128 + table_size, [], b""
    for signature, body in tags.items():
        table.append(struct.pack(">4sII", signature, offset + len(data), len(body)))
        data += body + b"\0" * (-len(body) % 4)
    size = 128 + table_size + len(data)
    header = struct.pack(
        ">I4sI4s4s4s12s4s", size, b"", 0x02100000, b"mntr", b"RGB ", b"XYZ ", b"", b"acsp"
    )
    header = header.ljust(68, b"\0") + _xyz(0.9642, 1.0, 0.8249)[8:]
    header = header.ljust(128, b"\0")
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data


def with_metadata() -> bytes:
    """A JPEG carrying EXIF (camera, GPS position), XMP, an ICC profile and a comment."""
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0110] = "Model 1"  # Model
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 12.0), 3: "E", 4: (4.0, 53.0, 0.0)}  # GPSInfo
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    return encode(
        scene(),
        "JPEG",
        exif=exif.tobytes(),
        xmp=xmp,
        icc_profile=adobe_rgb_like_profile(),
        comment=b"taken at home",
    )


def flat(format: str, width: int, height: int, orientation: int = 1) -> bytes:
    """A quickly encoded file of a given stored size, for checking sizes only."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(Image.new("RGB", (width, height), (90, 140, 200)), format, exif=exif.tobytes())


def decompression_bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A few hundred bytes whose header claims width x height RGB pixels."""
    return _raw_png(width, height, bit_depth=8, colour_type=2, pixel=b"\0\0\0", rows=1)


def large_png(width: int, height: int, *, bit_depth: int, colour_type: int, pixel: bytes) -> bytes:
    """A PNG of one colour, small and quick to make however many pixels it has (a 10000x10000
    16-bit one weighs about 1 MB and takes a fraction of a second)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return _png_file(ihdr, _repeated_zlib(b"\0" + pixel * width, height))


def large_tiff(
    width: int, height: int, *, photometric: int, samples: int, bits: int = 8, alpha: bool = False
) -> bytes:
    """A deflate-compressed TIFF of one colour (zero samples), small and quick to make however
    many pixels it has: every strip but the last is the same compressed bytes, stored once.

    `photometric` is the TIFF tag's value: 1 grey, 2 RGB, 5 separated (CMYK); with `alpha` the
    last of the `samples` is unassociated alpha.
    """
    rows_per_strip = max(1, min(height, 2**20 // (width * samples * bits // 8)))
    full_strips, last_rows = divmod(height, rows_per_strip)
    strip = zlib.compress(bytes(width * samples * bits // 8 * rows_per_strip))
    last = zlib.compress(bytes(width * samples * bits // 8 * last_rows))
    strips = [strip] * full_strips + ([last] if last_rows else [])
    tags = {
        256: (4, [width]),
        257: (4, [height]),
        258: (3, [bits] * samples),
        259: (3, [8]),  # Adobe deflate
        262: (3, [photometric]),
        273: (4, [0] * len(strips)),  # strip offsets, filled in below
        277: (3, [samples]),
        278: (4, [rows_per_strip]),
        279: (4, [len(data) for data in strips]),
        284: (3, [1]),  # samples interleaved
        **({338: (3, [2])} if alpha else {}),
    }
    data_at = 8
    tags[273] = (4, [data_at] * full_strips + ([data_at + len(strip)] if last_rows else []))
    return _tiff_file(tags, strip + (last if last_rows else b""), data_at)


def truncated_jpeg() -> bytes:
    data = jpeg()
    return data[: len(data) // 2]


def random_bytes(size: int = 4096, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _raw_png(
    width: int,
    height: int,
    *,
    bit_depth: int,
    colour_type: int,
    pixel: bytes,
    rows: int | None = None,
) -> bytes:
    """A PNG written by hand, for what Pillow cannot save; `rows` cuts the pixel data short."""
    row = b"\0" + pixel * width
    pixels = zlib.compress(row * (height if rows is None else rows))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = [(b"IHDR", ihdr), (b"IDAT", pixels), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in chunks
    )


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + struct.pack(">3i", *(round(v * 65536) for v in (x, y, z)))


def _text_description(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(ascii_text))
        + ascii_text
        + struct.pack(">II", 0, 0)  # no Unicode description
        + struct.pack(">HB", 0, 0)
        + b"\0" * 67  # no ScriptCode description
    )


def _png_file(ihdr: bytes, idat: bytes) -> bytes:
    chunks = [(b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in chunks
    )


def _repeated_zlib(row: bytes, times: int) -> bytes:
    """zlib data of `row * times`, compressing about a megabyte of it only: a full flush resets
    the compressor's history, so every block of rows after the first compresses the same."""
    rows = max(1, min(times, 2**20 // len(row)))
    blocks, rest = divmod(times, rows)
    compressor = zlib.compressobj(9)
    first = compressor.compress(row * rows) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(row * rows) + compressor.flush(zlib.Z_FULL_FLUSH)
    last = compressor.compress(row * rest) + compressor.flush()
    checksum = 1
    for block in [row * rows] * blocks + [row * rest]:
        checksum = zlib.adler32(block, checksum)
    return first + again * (blocks - 1) + last[:-4] + struct.pack(">I", checksum)


def _tiff_file(tags: dict[int, tuple[int, list[int]]], data: bytes, data_at: int) -> bytes:
    """A little-endian TIFF: header, `data` at `data_at` (8), then one IFD of `tags`
    (tag: (type, values), type 3 SHORT or 4 LONG), its longer values after it."""
    ifd_at = data_at + len(data)
    values_at = ifd_at + 2 + 12 * len(tags) + 4
    entries, values = b"", b""
    for tag, (kind, numbers) in sorted(tags.items()):
        packed = struct.pack(f"<{len(numbers)}{'H' if kind == 3 else 'I'}", *numbers)
        if len(packed) <= 4:
            field = packed.ljust(4, b"\0")
        else:
            field = struct.pack("<I", values_at + len(values))
            values += packed
        entries += struct.pack("<HHI", tag, kind, len(numbers)) + field
    ifd = struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_at) + data + ifd + values
