"""Feature maps as pictures: the first k channels of an activation tiled into one grey PNG.

Lessons use it to show what a layer responds to. Pillow writes the file; no plotting library.
"""

import math

import numpy as np

from scratchnst.image import save_image


def activation_grid(activation, k=16, columns=None, gap=1, scale=1):
    """Tile the first k channels of an activation into one grey image, each stretched to 0..255.

    Args:
        activation: (H, W, C) or (1, H, W, C), any float dtype.
        k: how many channels, the first k (all C if C < k).
        columns: tiles per row; default ceil(sqrt(k)), a near-square grid.
        gap: white pixels between tiles.
        scale: integer enlargement of every tile (nearest neighbour), for the small maps of deep layers.

    Returns:
        uint8 (rows * (H * scale + gap) - gap, columns * (W * scale + gap) - gap), rows = ceil(k / columns).
        Tile c is 255 * (a_c - min(a_c)) / (max(a_c) - min(a_c)): each channel on its own scale,
        since their ranges differ by orders of magnitude; a constant channel is black.
    """
    a = np.asarray(activation)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"activation must be (H, W, C) or (1, H, W, C), got {a.shape}")
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"activation must be (H, W, C) or (1, H, W, C), got {a.shape}")
    if k < 1 or gap < 0 or scale < 1:
        raise ValueError(f"need k >= 1, gap >= 0, scale >= 1; got k={k}, gap={gap}, scale={scale}")
    H, W, C = a.shape
    k = min(k, C)
    columns = columns or math.ceil(math.sqrt(k))
    rows = math.ceil(k / columns)
    tile_h, tile_w = H * scale, W * scale

    maps = a[:, :, :k].astype(np.float64)  # (H, W, k); float64 so the stretch loses nothing
    low = maps.min(axis=(0, 1))
    span = maps.max(axis=(0, 1)) - low
    stretched = np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0) * 255

    grid = np.full((rows * (tile_h + gap) - gap, columns * (tile_w + gap) - gap), 255, dtype=np.uint8)
    for c in range(k):
        top, left = (c // columns) * (tile_h + gap), (c % columns) * (tile_w + gap)
        tile = np.rint(stretched[:, :, c]).astype(np.uint8)
        grid[top:top + tile_h, left:left + tile_w] = tile.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def save_activation_grid(path, activation, k=16, columns=None, gap=1, scale=1):
    """Save `activation_grid(activation, k, columns, gap, scale)` as an image file (PNG), atomically.

    Returns:
        Path of the written file.
    """
    return save_image(path, activation_grid(activation, k, columns, gap, scale))
