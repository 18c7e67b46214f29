import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from devstack.sample_photos import sample_photo
from functions.common.config import InputLimits
from functions.common.errors import PermanentError
from functions.embed.decode import PhotoHeader, decode_photo, jpeg_reduction
from functions.embed.settings import EmbedSettings
from tests.embed_photos import multi_picture

SETTINGS = EmbedSettings()


def encode(image, image_format, orientation=1, **options):
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, image_format, exif=exif.tobytes(), **options)
    return buffer.getvalue()


def marked_image(mode="RGB"):
    """Grey, with a red top-left corner and a blue top edge to tell orientations apart."""
    image = Image.new("RGB", (60, 40), (128, 128, 128))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    image.paste((0, 0, 255), (20, 0, 40, 5))
    return image.convert(mode)


def as_bgr(image):
    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)


def assert_reason(data, reason, settings=SETTINGS):
    with pytest.raises(PermanentError) as raised:
        decode_photo(data, settings)
    assert raised.value.reason == reason


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_jpeg_decodes_exactly_as_cv2_imread(tmp_path, orientation):
    data = sample_photo(7, 1, size=(600, 400), orientation=orientation)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)

    np.testing.assert_array_equal(decode_photo(data, SETTINGS).image, cv2.imread(str(path)))


def test_multi_picture_jpeg_decodes_exactly_as_cv2_imread(tmp_path):
    data = multi_picture(Image.open(io.BytesIO(sample_photo(7, 1, size=(600, 400)))))
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)

    np.testing.assert_array_equal(decode_photo(data, SETTINGS).image, cv2.imread(str(path)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_displayed_image(orientation):
    stored = marked_image()
    data = encode(stored, "PNG", orientation)
    displayed = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))

    np.testing.assert_array_equal(decode_photo(data, SETTINGS).image, as_bgr(displayed))


def test_greyscale_becomes_three_equal_channels():
    decoded = decode_photo(encode(marked_image("L"), "JPEG"), SETTINGS).image

    assert decoded.shape == (40, 60, 3)
    assert np.array_equal(decoded[..., 0], decoded[..., 1])
    assert np.array_equal(decoded[..., 1], decoded[..., 2])


def test_cmyk_jpeg_becomes_bgr():
    decoded = decode_photo(encode(marked_image("CMYK"), "JPEG", quality=95), SETTINGS).image

    np.testing.assert_allclose(decoded[2, 2], (0, 0, 255), atol=12)
    np.testing.assert_allclose(decoded[30, 30], (128, 128, 128), atol=12)


def test_png_alpha_is_dropped_not_composited():
    image = marked_image("RGBA")
    image.putalpha(0)

    np.testing.assert_array_equal(decode_photo(encode(image, "PNG"), SETTINGS).image, as_bgr(image))


@pytest.mark.parametrize("pillow_format", ["HEIF", "AVIF"])
def test_heic_and_avif_are_decoded_upright(pillow_format):
    decoded = decode_photo(
        encode(marked_image(), pillow_format, orientation=6, quality=95), SETTINGS
    ).image

    assert decoded.shape == (60, 40, 3)
    np.testing.assert_allclose(decoded[2, 37], (0, 0, 255), atol=40)


def test_more_bytes_than_allowed_is_too_large():
    data = encode(marked_image(), "PNG")

    assert_reason(data, "too_large", EmbedSettings(limits=InputLimits(max_bytes=len(data) - 1)))


def test_more_pixels_than_allowed_is_too_large():
    assert_reason(
        encode(marked_image(), "PNG"),
        "too_large",
        EmbedSettings(limits=InputLimits(max_pixels=2399)),
    )


def png_without_pixels(width, height):
    """A PNG whose header claims width×height, followed by an empty data chunk."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"")


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    data = png_without_pixels(10000, 6000)

    assert_reason(data, "too_large", EmbedSettings(limits=InputLimits(max_pixels=50_000_000)))


def test_truncated_image_is_corrupt():
    data = encode(marked_image(), "PNG")

    assert_reason(data[: len(data) // 2], "corrupt")


def test_data_in_no_image_format_is_unsupported():
    assert_reason(b"%PDF-1.7 not a photo" * 20, "unsupported")


def test_gif_decoded_by_pillow_has_the_same_bgr_pixels_as_png_decoded_by_opencv():
    image = marked_image()

    np.testing.assert_array_equal(
        decode_photo(encode(image, "GIF"), SETTINGS).image,
        decode_photo(encode(image, "PNG"), SETTINGS).image,
    )


def test_a_gif_larger_than_a_band_has_the_same_bgr_pixels_in_every_row_as_its_png():
    # Taller than the bands Pillow's pixels are converted in; every row a different colour.
    image = Image.new("P", (2000, 1500))
    image.putpalette([channel for index in range(256) for channel in (index, 255 - index, 7)])
    for row in range(1500):
        image.paste(row % 256, (0, row, 2000, row + 1))

    np.testing.assert_array_equal(
        decode_photo(encode(image, "GIF"), SETTINGS).image,
        decode_photo(encode(image, "PNG"), SETTINGS).image,
    )


SHRINK = SETTINGS.replace(decode_shrink=True, decode_min_side=1280)


def test_jpeg_is_decoded_whole_by_default():
    decoded = decode_photo(sample_photo(1, 0, size=(4000, 3000)), SETTINGS)

    assert (decoded.image.shape, decoded.reduction) == ((3000, 4000, 3), 1)


@pytest.mark.parametrize("orientation", [1, 6])
def test_shrink_on_load_decodes_as_libjpeg_scales_and_keeps_the_photos_size(tmp_path, orientation):
    data = sample_photo(1, 0, size=(4000, 3000), orientation=orientation)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)

    decoded = decode_photo(data, SHRINK)

    np.testing.assert_array_equal(decoded.image, cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_2))
    assert (decoded.width, decoded.height, decoded.reduction) == (4000, 3000, 2)


@pytest.mark.parametrize(
    ("long_side", "min_side", "reduction"),
    [
        (4000, 1280, 2),
        (12000, 1280, 8),
        (8000, 1280, 4),
        (2558, 1280, 1),
        (2559, 1280, 2),
    ],
)
def test_shrink_is_the_largest_that_keeps_the_long_side_at_the_minimum(
    long_side, min_side, reduction
):
    header = PhotoHeader("JPEG", long_side, long_side // 2)
    settings = SHRINK.replace(decode_min_side=min_side)

    assert jpeg_reduction(header, settings) == reduction


def test_multi_picture_jpeg_is_shrunk_on_load_as_libjpeg_scales(tmp_path):
    data = multi_picture(Image.open(io.BytesIO(sample_photo(1, 0, size=(4000, 3000)))))
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)

    decoded = decode_photo(data, SHRINK)

    np.testing.assert_array_equal(decoded.image, cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_2))
    assert (decoded.width, decoded.height, decoded.reduction) == (4000, 3000, 2)


def test_only_jpeg_is_shrunk_on_load():
    decoded = decode_photo(encode(Image.new("RGB", (4000, 3000), (9, 9, 9)), "PNG"), SHRINK)

    assert (decoded.image.shape, decoded.reduction) == ((3000, 4000, 3), 1)
