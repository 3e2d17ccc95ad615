"""Random-access image collections that can be described, fingerprinted and reopened.

Mining streams over a collection once, but Top-k explainers fetch a feature's top images again much
later (often in another process), so a collection must be addressable by index and reopenable from a
small JSON description. ``source_id`` identifies the exact collection so that a resumed run never
mixes results from two datasets.

How images are read, whatever the source:

* A file is decoded in full when it is read, so a truncated file fails then and not inside a batch.
  An image that cannot be read (missing, empty, truncated, not an image) raises
  :class:`UnreadableImageError` naming it; mining skips, counts and names such images.
* :func:`to_rgb` turns every PIL mode into 8-bit RGB. 16-bit grayscale (``I;16`` and its byte
  orders, and ``I``, read as 0..65535) is scaled to 0..255, not clipped; an image with transparency
  (``RGBA``, ``LA``, ``PA``, a palette or ``L``/``RGB`` image with a transparent colour) is
  composited on white, as a viewer shows it on a page (dropping the alpha channel would show
  whatever colour the transparent pixels happen to hold); everything else goes through PIL's
  ``convert("RGB")``. The frame read of an animated image is the first.

:func:`open_images` reads a ``--images`` argument: a folder, a dataset saved with
``datasets``' ``save_to_disk``, or a Hugging Face dataset id (see its rules).

The package holds three concepts: :mod:`.decoding` (one image read and made RGB), :mod:`.sources`
(collections addressable by index) and :mod:`.spec` (opening a collection from what names it).
"""

from vis_steer_lens.image_sources.decoding import (
    IMAGE_DECODE_ERRORS,
    ImageSourceError,
    NoReadableImageError,
    UnreadableImageError,
    load_image,
    to_rgb,
)
from vis_steer_lens.image_sources.sources import (
    SKIPS_LOGGED,
    DatasetImages,
    FolderImages,
    ImageSource,
    ListImages,
    read_batch,
)
from vis_steer_lens.image_sources.spec import (
    HUB_PROBE_TIMEOUT,
    as_image_source,
    open_image_source,
    open_images,
)

__all__ = [
    "DatasetImages",
    "FolderImages",
    "HUB_PROBE_TIMEOUT",
    "IMAGE_DECODE_ERRORS",
    "ImageSource",
    "ImageSourceError",
    "ListImages",
    "NoReadableImageError",
    "UnreadableImageError",
    "as_image_source",
    "load_image",
    "open_image_source",
    "open_images",
    "read_batch",
    "SKIPS_LOGGED",
    "to_rgb",
]
