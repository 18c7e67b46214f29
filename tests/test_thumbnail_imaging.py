import io
import json
import resource
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, JpegImagePlugin

from devstack import photos
from functions.common.config import InputLimits
from functions.common.errors import PermanentError
from functions.thumbnail import imaging
from functions.thumbnail.imaging import Thumbnail, make_thumbnail, thumbnail_size
from functions.thumbnail.settings import ThumbnailSettings

SETTINGS = ThumbnailSettings()
SHARP_TABLE = json.loads((Path(__file__).parent / "data" / "sharp_dimensions.json").read_text())

CORNERS = {
    "top-left": (0.02, 0.02),
    "top-right": (0.98, 0.02),
    "bottom-left": (0.02, 0.98),
    "bottom-right": (0.98, 0.98),
}


def thumbnail(data: bytes, **settings: object) -> Thumbnail:
    return make_thumbnail(data, SETTINGS.replace(**settings))


def decoded(result: Thumbnail) -> Image.Image:
    image = Image.open(io.BytesIO(result.data))
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    return image


def colour_at(result: Thumbnail, x: float, y: float) -> tuple[int, int, int]:
    """The colour at a fraction of the way across and down the thumbnail."""
    image = decoded(result)
    return image.getpixel((round(x * (image.width - 1)), round(y * (image.height - 1))))


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 6) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (
        f"{actual} is not within {tolerance} of {expected}"
    )


def is_marker(colour: tuple[int, int, int]) -> bool:
    red, green, blue = colour
    return red > 200 and green < 60 and blue < 60


def corners_with_marker(result: Thumbnail) -> list[str]:
    return [name for name, (x, y) in CORNERS.items() if is_marker(colour_at(result, x, y))]


def jpeg_markers(data: bytes) -> list[int]:
    """The marker of each segment before the image data."""
    markers, offset = [], 2
    while data[offset + 1] != 0xDA:  # start of scan
        markers.append(data[offset + 1])
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return markers


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_displayed_upright(orientation):
    result = thumbnail(photos.jpeg(1200, 800, orientation=orientation))

    assert (result.width, result.height) == (400, 267)
    assert (result.original_width, result.original_height) == (1200, 800)
    assert corners_with_marker(result) == ["top-left"]


@pytest.mark.parametrize("format", ["PNG", "WEBP", "AVIF", "TIFF", "HEIF"])
def test_exif_orientation_is_applied_in_other_formats(format):
    result = thumbnail(photos.oriented(format, 6))

    assert (result.width, result.height) == (400, 267)
    assert corners_with_marker(result) == ["top-left"]


@pytest.mark.parametrize(
    ("photo", "source_format", "source_content_type"),
    [
        (lambda: photos.jpeg(), "JPEG", "image/jpeg"),
        (lambda: photos.progressive_jpeg(), "JPEG", "image/jpeg"),
        (lambda: photos.encode(photos.scene(), "PNG"), "PNG", "image/png"),
        (lambda: photos.encode(photos.scene(), "WEBP", quality=90), "WEBP", "image/webp"),
        (lambda: photos.encode(photos.scene(), "HEIF", quality=90), "HEIF", "image/heif"),
        (lambda: photos.encode(photos.scene(), "AVIF", quality=90), "AVIF", "image/avif"),
        (lambda: photos.encode(photos.scene(), "TIFF"), "TIFF", "image/tiff"),
        (lambda: photos.encode(photos.scene(), "GIF"), "GIF", "image/gif"),
        (lambda: photos.encode(photos.scene(), "BMP"), "BMP", "image/bmp"),
    ],
    ids=["jpeg", "progressive-jpeg", "png", "webp", "heic", "avif", "tiff", "gif", "bmp"],
)
def test_each_accepted_format_becomes_a_jpeg_thumbnail(photo, source_format, source_content_type):
    result = thumbnail(photo())

    assert (result.source_format, result.source_content_type) == (
        source_format,
        source_content_type,
    )
    assert result.content_type == "image/jpeg"
    assert (result.width, result.height) == (400, 267)
    assert (result.original_width, result.original_height) == (1200, 800)
    assert corners_with_marker(result) == ["top-left"]


def test_multi_picture_jpeg_is_a_jpeg_shown_by_its_first_picture():
    result = thumbnail(photos.multi_picture_jpeg())

    assert (result.source_format, result.source_content_type) == ("JPEG", "image/jpeg")
    assert corners_with_marker(result) == ["top-left"]


def test_adobe_cmyk_jpeg_keeps_its_colours():
    result = thumbnail(photos.cmyk_jpeg((0, 255, 255, 0)))

    assert_close(colour_at(result, 0.5, 0.5), (255, 0, 0))


def test_greyscale_becomes_grey_rgb():
    result = thumbnail(photos.greyscale())

    red, green, blue = colour_at(result, 0.5, 0.5)
    assert red == green == blue


def test_greyscale_with_alpha_is_flattened_onto_the_background():
    result = thumbnail(photos.greyscale_alpha_png(grey=0, alpha=0), background=(0, 0, 255))

    assert_close(colour_at(result, 0.5, 0.5), (0, 0, 255))


def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped():
    result = thumbnail(photos.grey16_png(0x8000))

    assert_close(colour_at(result, 0.5, 0.5), (128, 128, 128), tolerance=2)


def test_16_bit_rgb_is_scaled_to_8_bits():
    result = thumbnail(photos.rgb16_png((0xFFFF, 0x8000, 0x0000)))

    assert_close(colour_at(result, 0.5, 0.5), (255, 128, 0), tolerance=3)


def test_16_bit_greyscale_becomes_exactly_its_high_byte_in_every_row():
    # Taller than the bands it is converted in, with every row a different value.
    rows = [(43 * y) % 65536 for y in range(1500)]
    grey16 = Image.frombytes(
        "I;16", (2000, 1500), b"".join(struct.pack("<H", v) * 2000 for v in rows)
    )
    high_bytes = Image.frombytes("L", (2000, 1500), b"".join(bytes([v >> 8]) * 2000 for v in rows))

    result = thumbnail(photos.encode(grey16, "PNG"))

    assert result.data == thumbnail(photos.encode(high_bytes, "PNG")).data


def test_palette_transparency_in_a_large_image_is_kept_in_every_row():
    # Taller than the bands it is converted in; rows alternate transparent and red.
    image = Image.new("P", (2000, 1500), 0)
    image.putpalette([0, 255, 0, 255, 0, 0])
    for top in range(0, 1500, 100):
        image.paste(1, (0, top, 2000, top + 50))
    image.info["transparency"] = 0

    result = thumbnail(photos.encode(image, "PNG"))

    assert result.data == thumbnail(photos.encode(image.convert("RGBA"), "PNG")).data


def test_palette_transparency_is_flattened_onto_the_background():
    result = thumbnail(photos.palette_gif_with_transparency(), background=(0, 0, 255))

    assert_close(colour_at(result, 0.1, 0.5), (0, 0, 255))
    assert_close(colour_at(result, 0.9, 0.5), (255, 0, 0))


def test_one_bit_image_stays_black_and_white():
    result = thumbnail(photos.one_bit())

    assert_close(colour_at(result, 0.1, 0.5), (0, 0, 0), tolerance=2)
    assert_close(colour_at(result, 0.9, 0.5), (255, 255, 255), tolerance=2)


def test_transparent_pixels_take_the_configured_background():
    result = thumbnail(photos.png_with_alpha((200, 30, 30), alpha=255), background=(0, 128, 0))

    assert_close(colour_at(result, 0.1, 0.5), (0, 128, 0))
    assert_close(colour_at(result, 0.9, 0.5), (200, 30, 30))


def test_half_transparent_pixels_blend_with_the_background():
    result = thumbnail(photos.png_with_alpha((255, 0, 0), alpha=128), background=(0, 0, 255))

    assert_close(colour_at(result, 0.9, 0.5), (128, 0, 127))


@pytest.mark.parametrize("format", ["GIF", "WEBP"])
def test_animation_is_represented_by_its_first_frame(format):
    result = thumbnail(photos.animated(format, [(255, 0, 0), (0, 0, 255), (0, 255, 0)]))

    assert_close(colour_at(result, 0.5, 0.5), (255, 0, 0))


def test_embedded_icc_profile_is_converted_to_srgb():
    profile = photos.adobe_rgb_like_profile()
    adobe_green = (60, 180, 90)
    expected = ImageCms.profileToProfile(
        Image.new("RGB", (1, 1), adobe_green),
        ImageCms.ImageCmsProfile(io.BytesIO(profile)),
        ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
    ).getpixel((0, 0))
    assert abs(expected[0] - adobe_green[0]) > 40  # the conversion is not a no-op

    result = thumbnail(photos.with_icc_profile(adobe_green, profile))

    assert_close(colour_at(result, 0.5, 0.5), expected, tolerance=3)


def test_unusable_icc_profile_is_ignored():
    result = thumbnail(photos.with_icc_profile((60, 180, 90), b"not an ICC profile"))

    assert_close(colour_at(result, 0.5, 0.5), (60, 180, 90), tolerance=3)


def test_output_carries_no_metadata():
    result = thumbnail(photos.with_metadata())

    image = decoded(result)
    assert not image.getexif()
    assert {"exif", "icc_profile", "xmp", "comment"}.isdisjoint(image.info)
    app0, dqt, sof0, dht = 0xE0, 0xDB, 0xC0, 0xC4
    assert set(jpeg_markers(result.data)) <= {app0, dqt, sof0, dht}


def test_output_is_baseline_jpeg_with_420_chroma_subsampling():
    result = thumbnail(photos.jpeg())

    sof0 = 0xC0
    assert sof0 in jpeg_markers(result.data)
    assert JpegImagePlugin.get_sampling(decoded(result)) == 2  # 4:2:0


def test_higher_quality_gives_a_larger_file():
    low = thumbnail(photos.jpeg(), quality=50)
    high = thumbnail(photos.jpeg(), quality=95)

    assert len(high.data) > len(low.data)


def test_small_image_is_never_enlarged():
    result = thumbnail(photos.jpeg(200, 100))

    assert (result.width, result.height) == (200, 100)


def test_image_fits_inside_the_configured_box():
    result = thumbnail(photos.jpeg(1200, 800), max_width=300, max_height=100)

    assert (result.width, result.height) == (150, 100)


@pytest.mark.parametrize(
    "case",
    SHARP_TABLE["cases"],
    ids=lambda case: f"{case['format']}-{case['width']}x{case['height']}-o{case['orientation']}",
)
def test_thumbnail_size_matches_sharp(case):
    max_width, max_height = SHARP_TABLE["box"]
    data = photos.flat(case["format"], case["width"], case["height"], case["orientation"])

    result = thumbnail(data, max_width=max_width, max_height=max_height)

    assert [result.width, result.height] == case["sharp"]


@pytest.mark.parametrize(
    "case",
    [case for case in SHARP_TABLE["cases"] if case["format"] in ("PNG", "TIFF", "GIF")],
    ids=lambda case: f"{case['format']}-{case['width']}x{case['height']}-o{case['orientation']}",
)
def test_size_without_shrink_on_load_is_sharps_resize_size(case):
    stored = (case["width"], case["height"])
    displayed = stored[::-1] if case["orientation"] in (5, 6, 7, 8) else stored

    assert list(thumbnail_size(*displayed, *SHARP_TABLE["box"])) == case["sharp"]


def test_input_over_the_byte_limit_is_too_large():
    data = photos.jpeg()

    with pytest.raises(PermanentError) as error:
        thumbnail(data, limits=InputLimits(max_bytes=len(data) - 1))

    assert error.value.reason == "too_large"


def test_input_at_the_byte_limit_is_accepted():
    data = photos.jpeg()

    assert thumbnail(data, limits=InputLimits(max_bytes=len(data))).width == 400


def test_image_over_the_pixel_limit_is_too_large():
    with pytest.raises(PermanentError) as error:
        thumbnail(photos.jpeg(1200, 800), limits=InputLimits(max_pixels=1200 * 800 - 1))

    assert error.value.reason == "too_large"


def test_image_at_the_pixel_limit_is_accepted():
    assert thumbnail(photos.jpeg(1200, 800), limits=InputLimits(max_pixels=1200 * 800)).width == 400


def test_decompression_bomb_is_refused_from_its_header():
    bomb = photos.decompression_bomb_png(50_000, 50_000)
    assert len(bomb) < 1_000

    peak_kib_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PermanentError) as error:
        thumbnail(bomb)

    assert error.value.reason == "too_large"
    # Decoding it would need 7.5 GB; refusing it from the header allocates nothing notable.
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kib_before
    assert grown_kib < 50 * 1024


def test_truncated_jpeg_is_corrupt():
    with pytest.raises(PermanentError) as error:
        thumbnail(photos.truncated_jpeg())

    assert error.value.reason == "corrupt"


@pytest.mark.parametrize("format", ["PNG", "WEBP", "HEIF", "AVIF", "TIFF", "GIF", "BMP"])
def test_truncated_file_is_corrupt(format):
    data = photos.encode(photos.scene(), format)

    with pytest.raises(PermanentError) as error:
        thumbnail(data[: len(data) // 2])

    assert error.value.reason == "corrupt"


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "HEIF", "AVIF", "TIFF", "GIF", "BMP"])
def test_damaged_file_fails_only_with_a_permanent_error(format):
    data = bytearray(photos.encode(photos.scene(300, 200), format))
    for offset in range(0, len(data), max(1, len(data) // 40)):
        damaged = bytearray(data)
        damaged[offset : offset + 8] = b"\xff\x00\x13\x37\xde\xad\xbe\xef"
        try:
            thumbnail(bytes(damaged))
        except PermanentError as error:
            assert error.reason in {"corrupt", "unsupported"}


def test_random_bytes_are_unsupported():
    with pytest.raises(PermanentError) as error:
        thumbnail(photos.random_bytes())

    assert error.value.reason == "unsupported"


def test_empty_input_is_unsupported():
    with pytest.raises(PermanentError) as error:
        thumbnail(b"")

    assert error.value.reason == "unsupported"


def test_image_format_outside_the_accepted_list_is_unsupported():
    with pytest.raises(PermanentError) as error:
        thumbnail(photos.encode(photos.scene(64, 64), "ICO"))

    assert error.value.reason == "unsupported"


def resampled_sizes(monkeypatch, data: bytes) -> tuple[Thumbnail, list[tuple[int, int]]]:
    """The thumbnail of `data`, and the size of each image Pillow resampled on the way: the
    first is the decoded image."""
    sizes = []
    resize = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sizes.append(self.size)
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    return thumbnail(data), sizes


def as_thumbnail(image: Image.Image) -> Image.Image:
    """`image` encoded as make_thumbnail encodes, and decoded again."""
    output = io.BytesIO()
    image.save(output, "JPEG", quality=80, subsampling="4:2:0")
    return Image.open(output)


def psnr(a: Image.Image, b: Image.Image) -> float:
    first = np.asarray(a.convert("RGB"), dtype=np.float64)
    second = np.asarray(b.convert("RGB"), dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean((first - second) ** 2)))


def test_a_baseline_12_mp_jpeg_is_decoded_at_an_eighth_and_keeps_sharps_size(monkeypatch):
    result, sizes = resampled_sizes(monkeypatch, photos.jpeg(4032, 3024))

    assert sizes[0] == (504, 378)
    assert (result.width, result.height) == (400, 300)


def test_a_jpeg_sharp_decodes_at_half_is_decoded_at_a_quarter_and_keeps_sharps_size(monkeypatch):
    # sharp takes 1/2 here, not 1/4, as the shrink (4.8) is barely over 4.
    result, sizes = resampled_sizes(monkeypatch, photos.jpeg(1920, 1080))

    assert sizes[0] == (480, 270)
    assert (result.width, result.height) == (400, 225)


def test_a_jpeg_is_never_decoded_smaller_than_its_thumbnail(monkeypatch):
    # sharp decodes 1/2 (900x400) for a 400x178 thumbnail; 1/4 would be 450x200, 1/8 225x100.
    result, sizes = resampled_sizes(monkeypatch, photos.jpeg(1800, 800))

    assert sizes[0] == (450, 200)
    assert (result.width, result.height) == (400, 178)


def test_a_jpeg_decoded_below_sharps_scale_looks_as_if_decoded_at_sharps():
    data = photos.encode(photos.scene(1920, 1080), "JPEG", quality=95)
    at_sharps_scale = Image.open(io.BytesIO(data))
    at_sharps_scale.draft("RGB", (960, 540))

    result = thumbnail(data)

    expected = at_sharps_scale.resize((400, 225), Image.Resampling.LANCZOS)
    assert psnr(decoded(result), as_thumbnail(expected)) >= 40


def test_a_large_png_reduced_in_two_steps_looks_like_sharps_resampling():
    scene = photos.scene(2000, 1500)

    result = thumbnail(photos.encode(scene, "PNG"))

    # libvips: a box filter down to at most twice the size, then Lanczos.
    expected = scene.resize((400, 300), Image.Resampling.LANCZOS, reducing_gap=2.0)
    assert psnr(decoded(result), as_thumbnail(expected)) >= 40


def test_a_webp_is_decoded_already_scaled_by_libvips_as_sharp_has_libwebp_do(monkeypatch):
    # The shrink is 4.08: libwebp scales 1632x1224 to 400x300 while decoding, not Pillow's whole.
    result, sizes = resampled_sizes(monkeypatch, photos.encode(photos.scene(1632, 1224), "WEBP"))

    assert sizes[0] == (400, 300)
    assert (result.width, result.height) == (400, 300)


@pytest.mark.parametrize(
    ("mode", "subsampling"),
    [("RGB", "4:2:0"), ("RGB", "4:2:2"), ("RGB", "4:4:4"), ("L", "4:4:4"), ("CMYK", "4:4:4")],
)
def test_a_progressive_jpeg_at_an_eighth_skips_the_scans_it_cannot_show_to_the_same_pixels(
    monkeypatch, mode, subsampling
):
    data = photos.encode(
        photos.scene(4000, 3000).convert(mode),
        "JPEG",
        quality=90,
        progressive=True,
        subsampling=subsampling,
    )
    lighter = imaging._scans_an_eighth_shows(data)
    assert lighter is not None
    assert len(lighter) < len(data) * 0.8

    result = thumbnail(data)
    monkeypatch.setattr(imaging, "_scans_an_eighth_shows", lambda data: None)

    assert result.data == thumbnail(data).data


def test_a_truncated_progressive_jpeg_is_still_corrupt():
    data = photos.encode(photos.scene(4000, 3000), "JPEG", progressive=True)

    with pytest.raises(PermanentError) as error:
        thumbnail(data[: len(data) // 2])

    assert error.value.reason == "corrupt"


def test_a_progressive_jpeg_decoded_at_a_larger_scale_keeps_every_scan(monkeypatch):
    seen = []
    monkeypatch.setattr(imaging, "_scans_an_eighth_shows", seen.append)

    thumbnail(photos.encode(photos.scene(1600, 1200), "JPEG", progressive=True))

    assert seen == []
