"""Procedural product photos: one ``Look`` in, one studio-style RGB image out.

The images exist so a fine-tuned VLM can read the row's metadata back from pixels alone, so every
field of the ``Look`` leaves a visible trace: the silhouette draws the outline, ``rgb`` is the main
fill, ``texture`` and ``pattern`` are the surface. ``trim`` adds hardware and stitching; like
``variant`` + ``seed``, which move the background, pose and light, it is drawn independently of every
label, so neither the studio nor the trim predicts the category or the price.

Speed is the design constraint (~1 ms for a 336 px image on one core). The whole picture is built
as an 8-bit *index* image and coloured in one palette lookup:

* indices 0..95 are the studio (wall ramp 0..47, floor ramp 48..95; shadows subtract indices),
* indices 96..255 are the product: 4 pattern colours x 40 shading levels.

Texture and pattern are therefore precomputed once per size as an index tile (cached); a render
only draws the silhouette mask, pastes the tile through it, builds a 256-entry palette from the
look's colours and converts to RGB. Trim (seams, buttons, buckles, soles) is drawn afterwards with
flat colours. Geometry is described once per (silhouette, category1, price bucket) in unit
coordinates (cached) and transformed to pixels with one small numpy product per image.

The package, one module a concern (as Faker lays out its providers):

* :mod:`.shapes` - the silhouettes by name; their builders in :mod:`.garments` and :mod:`.accessories`,
  drawn with the outlines and builder of :mod:`.geometry`;
* :mod:`.surfaces` - textures and patterns as index tiles;
* :mod:`.studio` - background, shadow, pose and light, and the palette;
* :mod:`.palette` - the index layout and the colours derived from a product's RGB;
* :mod:`.compose` - ``render`` / ``render_with_mask``: the steps above, for one ``Look``;
* :mod:`.encode` - the JPEG bytes that go into a row.
"""
from __future__ import annotations

from generator.render.compose import render, render_with_mask
from generator.render.encode import encode_jpeg
from generator.render.shapes import SILHOUETTES
from generator.render.surfaces import PATTERNS, TEXTURES

__all__ = ["PATTERNS", "SILHOUETTES", "TEXTURES", "encode_jpeg", "render", "render_with_mask"]
