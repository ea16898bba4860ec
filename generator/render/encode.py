"""Row bytes: the JPEG encoding of a rendered image."""
from __future__ import annotations

import io

from PIL import Image


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """Baseline JPEG bytes: libjpeg is deterministic without `optimize`/`progressive` passes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False, progressive=False)
    return buf.getvalue()
