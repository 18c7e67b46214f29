"""Where the thumbnail stage stores each photo's thumbnail."""

from functions.common.events import PhotoRef
from functions.thumbnail.service import thumbnail_key
from functions.thumbnail.settings import ThumbnailSettings


def default_key(key):
    return thumbnail_key(ThumbnailSettings().key_template, PhotoRef("photos", key, None, "ann"))


def test_the_default_thumbnail_key_is_the_photos_key_under_the_thumbnail_prefix():
    assert default_key("ann/trip/IMG_1.HEIC") == "thumbnails/ann/trip/IMG_1.HEIC.jpg"


def test_photos_differing_only_in_extension_get_their_own_thumbnails():
    assert default_key("ann/IMG_1.HEIC") != default_key("ann/IMG_1.JPG")
