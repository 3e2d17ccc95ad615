"""Reading one image: decoding a file in full, the errors that name an unreadable image, and every
PIL mode made 8-bit RGB (:func:`to_rgb`)."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
from PIL import Image

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: What PIL (and ``datasets``' image decoding) raises for an image it cannot decode
#: (``UnidentifiedImageError`` and truncated files are ``OSError``).
IMAGE_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


class ImageSourceError(ValueError):
    """An image collection that cannot be opened as given (a missing folder, no images, a bad
    dataset id, ``datasets`` not installed)."""


class UnreadableImageError(ImageSourceError):
    """One image of a collection cannot be read (missing, empty, truncated, not an image).

    Attributes:
        name: The image's name in its collection (a folder's relative path, ``train[12]``).
        reason: What is wrong with it.
        index: Its index in the collection, where known.
    """

    def __init__(self, name: str, reason: str, index: int | None = None) -> None:
        self.name, self.reason, self.index = name, reason, index
        super().__init__(
            f"Cannot read image {name!r}: {reason}. Expected an image file PIL can decode; replace or "
            "remove it (mining skips and counts unreadable images)."
        )

    def __reduce__(self):
        return type(self), (self.name, self.reason, self.index)


class NoReadableImageError(ImageSourceError):
    """Not one image of a collection could be read."""


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of a PIL image of any mode (the rules are in the module docstring).

    Args:
        image: The image (``I;16`` and ``I`` are read as 16-bit levels 0..65535).

    Returns:
        A new ``RGB`` image of the same size; the input is left as it is.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        levels = np.clip(np.asarray(image).astype(np.float64), 0, 65535)
        return Image.fromarray(np.rint(levels / 257.0).astype(np.uint8)).convert("RGB")
    has_alpha = "A" in image.mode or "a" in image.mode or image.info.get("transparency") is not None
    if has_alpha:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike, name: str | None = None, index: int | None = None) -> Image.Image:
    """Read and fully decode an image file as RGB (:func:`to_rgb`).

    Args:
        path: The file.
        name: Its name in messages (default: the path).
        index: Its index in a collection, recorded in the error.

    Raises:
        UnreadableImageError: The file is missing, empty, truncated or not an image PIL reads.
    """
    name = name if name is not None else str(path)
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        reason = "the file is gone (deleted or moved after the folder was listed)"
    except Image.UnidentifiedImageError:
        empty = os.path.isfile(path) and os.path.getsize(path) == 0
        reason = "the file is empty (0 bytes)" if empty else "not an image file PIL can identify"
    except Image.DecompressionBombError as err:
        reason = f"refused as a possible decompression bomb ({err})"
    except IMAGE_DECODE_ERRORS as err:
        reason = f"it cannot be decoded ({type(err).__name__}: {err})"
    raise UnreadableImageError(name, reason, index)
