"""Generated photos for the embed tests, with faces for either pack: the TEST pack's face markers
(devstack/make_test_model_pack.py) on the left, and real people on the right, from the group
photo that insightface ships in its wheel (insightface/data/images/t1.jpg, six faces). The TEST
pack finds the markers, a real buffalo_l finds the people, and the parity tests hold for both.
"""

from __future__ import annotations

import io
from pathlib import Path

import insightface
from PIL import Image

from devstack.make_test_model_pack import draw_face
from devstack.sample_photos import sample_photo, stored_for_orientation
from functions.common.images import EXIF_ORIENTATION

GROUP_PHOTO = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
SIZE = (3000, 2000)
# (centre, side, identity) of each marker, all left of the group photo.
MARKERS = (((350, 350), 240, 0), ((1000, 1000), 260, 1), ((350, 1650), 240, 2))
EDGE_MARKER = ((110, 1650), 260, 3)  # 20 px of its 260 lie left of the photo


def scene(seed: int = 1, edge: bool = False) -> Image.Image:
    """The displayed RGB image: markers, and the group photo 1536 px wide at (1400, 400), or,
    with `edge`, a marker cut by the left edge and the group photo cut by the right edge."""
    image = Image.open(io.BytesIO(sample_photo(seed, 0, size=SIZE))).convert("RGB")
    with Image.open(GROUP_PHOTO) as group:
        people = group.convert("RGB").resize((1536, 1063), Image.Resampling.LANCZOS)
    image.paste(people, (SIZE[0] - 1536 + 200 if edge else 1400, 400))
    for center, side, identity in (*MARKERS[:2], EDGE_MARKER) if edge else MARKERS:
        draw_face(image, center, side, identity)
    return image


def encode(
    image: Image.Image, image_format: str = "JPEG", orientation: int = 1, mode: str = "RGB"
) -> bytes:
    """The file whose displayed image is `image` in `mode`, stored turned with an EXIF
    orientation tag when `orientation` is not 1."""
    exif = Image.Exif()
    if orientation != 1:
        image = stored_for_orientation(image, orientation)
        exif[EXIF_ORIENTATION] = orientation
    options = {"quality": 92} if image_format == "JPEG" else {}
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, image_format, exif=exif.tobytes(), **options)
    return buffer.getvalue()


def multi_picture(image: Image.Image) -> bytes:
    """A multi-picture JPEG (MPO), as phones write one: `image`, then a half-size grey picture
    standing for the gain map or depth map they append."""
    appended = Image.new("RGB", (image.width // 2, image.height // 2), (128, 128, 128))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "MPO", quality=92, save_all=True, append_images=[appended])
    return buffer.getvalue()
