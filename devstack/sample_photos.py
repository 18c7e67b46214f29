"""Synthetic photos with face markers for the TEST model pack, for tests and the demo."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from devstack.make_test_model_pack import draw_face
from functions.common.images import EXIF_ORIENTATION

IDENTITIES = 10
# For each EXIF orientation, the transpose that turns the displayed image into the stored one
# (the inverse of what a viewer applies).
_STORED_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
# Background colours stay close to grey: the markers are the only magenta-family pixels.
_MAX_TINT = 12


@dataclass(frozen=True)
class DrawnFace:
    center: tuple[int, int]
    size: int
    identity: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The marker's box in displayed pixels, as draw_face paints it."""
        left, top = self.center[0] - self.size // 2, self.center[1] - self.size // 2
        return (left, top, left + self.size, top + self.size)


def face_layout(seed: int, faces: int, size: tuple[int, int] = (3000, 2000)) -> list[DrawnFace]:
    """Where `sample_photo` draws its markers (displayed coordinates): distinct identities,
    sides of a tenth to a fifth of the short edge, at least one side apart."""
    if faces > IDENTITIES:
        raise ValueError(f"at most {IDENTITIES} faces, one per identity")
    rng = np.random.default_rng([seed, 1])
    identities = rng.permutation(IDENTITIES)[:faces]
    short = min(size)
    placed: list[DrawnFace] = []
    for _ in range(1000):
        if len(placed) == faces:
            return placed
        side = int(rng.integers(short // 10, short // 5 + 1))
        margin = side // 2 + short // 20
        center = (
            int(rng.integers(margin, size[0] - margin)),
            int(rng.integers(margin, size[1] - margin)),
        )
        if all(_apart(center, side, other) for other in placed):
            placed.append(DrawnFace(center, side, int(identities[len(placed)])))
    raise ValueError(f"cannot place {faces} faces in a {size[0]}×{size[1]} photo")


def _apart(center: tuple[int, int], side: int, other: DrawnFace) -> bool:
    gap = max(abs(center[0] - other.center[0]), abs(center[1] - other.center[1]))
    return gap >= (side + other.size) / 2 + max(side, other.size)


def sample_photo(
    seed: int, faces: int, size: tuple[int, int] = (3000, 2000), orientation: int = 1
) -> bytes:
    """A JPEG whose displayed image is `size` with the markers of `face_layout(seed, ...)`,
    stored transposed with an EXIF orientation tag when `orientation` != 1."""
    image = _background(np.random.default_rng([seed, 2]), size)
    for face in face_layout(seed, faces, size):
        draw_face(image, face.center, face.size, face.identity)
    exif = Image.Exif()
    if orientation != 1:
        image = stored_for_orientation(image, orientation)
        exif[EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92, subsampling=0, exif=exif.tobytes())
    return buffer.getvalue()


def stored_for_orientation(image: Image.Image, orientation: int) -> Image.Image:
    """What to store so that a viewer applying EXIF `orientation` displays `image`."""
    transpose = _STORED_TRANSPOSE.get(orientation)
    return image if transpose is None else image.transpose(transpose)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Smooth near-grey gradients, soft shapes and luminance noise, like a dull photo."""
    width, height = size
    coarse = _muted(rng, (3, 4)).astype(np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = (
            int(rng.integers(width // 20, width // 4)),
            int(rng.integers(height // 20, height // 4)),
        )
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + w, y + h), fill=tuple(int(c) for c in _muted(rng, ())))
    image = image.filter(ImageFilter.GaussianBlur(3))
    noise = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    pixels = np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _muted(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    grey = rng.uniform(50, 205, (*shape, 1))
    return grey + rng.uniform(-_MAX_TINT, _MAX_TINT, (*shape, 3))
