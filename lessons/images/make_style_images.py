"""Paint the two style images the lessons ship, from nothing but NumPy, Pillow and a seed.

    python lessons/images/make_style_images.py          # rewrites swirls.jpg and mosaic.jpg here

Why generate them: a style image must have a strong, recognisable texture, and the project may
only ship images it is allowed to redistribute. Pictures the project paints itself are ours to
ship (same licence as the code), and anyone can see exactly how they were made.

    swirls.jpg   thousands of short brush strokes that follow a field of whirlpools, in blues,
                 whites and yellows: oriented strokes at several scales, like a post-impressionist
                 night sky.
    mosaic.jpg   stained glass: Voronoi cells in saturated colours, shaded towards their edges,
                 held by dark lead lines: flat colour regions and sharp dark borders.

The output depends only on the seed (and on Pillow's line drawing, which has not changed in years).
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------ swirls
def _flow(x, y, vortices, size):
    """Unit direction (dx, dy) of the flow at points (x, y): a drift plus whirlpools."""
    # A gentle rightward drift that undulates, so that strokes far from a whirlpool still flow.
    vx = np.ones_like(x)
    vy = 0.6 * np.sin(2 * np.pi * x / size * 1.5 + 1.0) * np.cos(2 * np.pi * y / size)
    for cx, cy, strength, radius in vortices:
        dx, dy = x - cx, y - cy
        r2 = dx * dx + dy * dy + radius * radius  # the radius softens the centre
        # tangential velocity (-dy, dx) / r^2 turns around the centre, faster close to it
        vx += strength * radius * -dy / r2 * 4
        vy += strength * radius * dx / r2 * 4
    norm = np.sqrt(vx * vx + vy * vy) + 1e-9
    return vx / norm, vy / norm


def paint_swirls(size=320, seed=7, supersample=2):
    """A night sky of swirling brush strokes, (size, size) RGB uint8."""
    rng = np.random.default_rng(seed)
    S = size * supersample  # draw large, shrink at the end: antialiased strokes for free
    vortices = [(S * 0.30, S * 0.32, 1.0, S * 0.10),
                (S * 0.72, S * 0.25, -0.8, S * 0.07),
                (S * 0.55, S * 0.70, 1.1, S * 0.12),
                (S * 0.12, S * 0.80, -0.7, S * 0.06),
                (S * 0.88, S * 0.62, 0.8, S * 0.06)]
    deep = np.array([[16, 32, 84], [28, 58, 128], [46, 90, 170], [70, 120, 190]], float)
    light = np.array([[236, 214, 96], [250, 240, 170], [222, 180, 60], [200, 222, 236]], float)

    # Background: deep blue with a soft yellow glow around each whirlpool.
    yy, xx = np.mgrid[0:S, 0:S].astype(float)
    glow = np.zeros((S, S))
    for cx, cy, _, radius in vortices:
        glow += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (1.6 * radius) ** 2))
    glow = np.clip(glow, 0, 1)[..., None]
    canvas = (1 - glow) * deep[1] + glow * light[0]
    img = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(img)

    def glow_at(px, py):
        return glow[int(np.clip(py, 0, S - 1)), int(np.clip(px, 0, S - 1)), 0]

    # Strokes in three passes, broad to fine, so that fine strokes sit on top, as a painter works.
    for n_strokes, width, length in ((1400, 7, 16), (2600, 5, 12), (3200, 3, 9)):
        width *= supersample
        for _ in range(n_strokes):
            px, py = rng.uniform(0, S, 2)
            g = glow_at(px, py)
            # Near a whirlpool pick the light palette more often: the colour follows the glow.
            palette = light if rng.random() < 0.15 + 0.8 * g else deep
            colour = palette[rng.integers(len(palette))] + rng.normal(0, 12, 3)
            points = [(px, py)]
            step = 2.5 * supersample
            for _ in range(length):
                ux, uy = _flow(np.array(px), np.array(py), vortices, S)
                px, py = px + step * float(ux), py + step * float(uy)
                points.append((px, py))
            draw.line(points, fill=tuple(int(c) for c in np.clip(colour, 0, 255)), width=int(width),
                      joint="curve")
    img = img.filter(ImageFilter.GaussianBlur(0.6 * supersample))
    img = img.resize((size, size), Image.LANCZOS)
    # A little canvas grain.
    arr = np.asarray(img, float) + rng.normal(0, 4, (size, size, 1))
    return np.clip(arr, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ mosaic
def paint_mosaic(size=320, seed=11, cells=110):
    """Stained glass: Voronoi cells with dark lead lines, (size, size) RGB uint8."""
    rng = np.random.default_rng(seed)
    # Jittered grid of cell centres: more even than uniform points, so no cell is a sliver.
    k = int(np.ceil(np.sqrt(cells)))
    gy, gx = np.mgrid[0:k, 0:k].astype(float)
    centres = np.stack([(gx.ravel() + rng.uniform(0.1, 0.9, k * k)) * size / k,
                        (gy.ravel() + rng.uniform(0.1, 0.9, k * k)) * size / k], axis=1)
    palette = np.array([[196, 30, 45], [230, 140, 20], [245, 205, 50], [40, 120, 60],
                        [25, 80, 160], [90, 40, 140], [20, 150, 170], [235, 235, 220]], float)
    colours = palette[rng.integers(len(palette), size=len(centres))] + rng.normal(0, 10, (len(centres), 3))

    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    pix = np.stack([xx.ravel(), yy.ravel()], axis=1)  # (P, 2)
    d = np.sqrt(((pix[:, None, :] - centres[None, :, :]) ** 2).sum(-1))  # (P, cells) distances
    order = np.argsort(d, axis=1)[:, :2]
    d1 = np.take_along_axis(d, order[:, :1], 1)[:, 0]
    d2 = np.take_along_axis(d, order[:, 1:2], 1)[:, 0]
    nearest = order[:, 0]
    # (d2 - d1) / 2 is the distance to the cell's border: the lead lines are where it is small.
    to_border = (d2 - d1) / 2
    shade = 0.65 + 0.35 * np.clip(to_border / (size / k * 0.35), 0, 1)  # glass darker at the rim
    rgb = colours[nearest] * shade[:, None]
    lead = np.clip((to_border - 1.2) / 1.0, 0, 1)[:, None]  # 0 on the line, 1 inside, soft edge
    rgb = lead * rgb + (1 - lead) * np.array([28, 24, 22])
    rgb += rng.normal(0, 5, rgb.shape)  # the glass is never perfectly flat
    return np.clip(rgb.reshape(size, size, 3), 0, 255).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the images to")
    parser.add_argument("--size", type=int, default=320, help="side of the square images, pixels")
    args = parser.parse_args()
    for name, paint in (("swirls.jpg", paint_swirls), ("mosaic.jpg", paint_mosaic)):
        path = args.out / name
        Image.fromarray(paint(args.size)).save(path, quality=92)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
