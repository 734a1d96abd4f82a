"""Make the training photos behind README.md's numbers for `scratchnst train`, from installed packages.

    pip install scikit-image scikit-learn matplotlib     # only for this script: not scratchnst's dependencies
    python lessons/images/make_benchmark_photos.py DIR   # DIR/train/ (15 photos), DIR/held_out/camera.png

Why a script and not a folder: the project ships only the images it is allowed to redistribute
(CREDITS.md); these are the photographs and textures that scikit-image 0.26, scikit-learn and
matplotlib ship inside their wheels, under their own terms, so each user makes them from their
own installed copies, and every run of the benchmark trains on the same pixels.

    DIR/train/      8 photographs (astronaut, coffee, rocket, motorcycle, the Chinese temple and the
                    flower of scikit-learn, Grace Hopper, the Hubble deep field) and 7 textures
                    (brick, grass, gravel, coins, the moon, a stained tissue, a retina): varied
                    subjects, as a folder of COCO would be, but small enough to train on in minutes
    DIR/held_out/   scikit-image's cameraman, a photo the network never trains on; the other two
                    held-out photos of the benchmark are lessons/images/cat.jpg and, where
                    ../shared is present, ../shared/images/tubingen.jpg

Each is written as an RGB PNG (grey ones as three equal channels), at its own size:
`scratchnst train` scales every photo to --size itself. A file that exists already is written
again only if its pixels differ (the script can be run twice).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# (package, path inside the package's folder, name written)
TRAIN = [
    ("skimage", "data/astronaut.png", "astronaut.png"),
    ("skimage", "data/coffee.png", "coffee.png"),
    ("skimage", "data/rocket.jpg", "rocket.png"),
    ("skimage", "data/motorcycle_left.png", "motorcycle.png"),
    ("sklearn", "datasets/images/china.jpg", "china.png"),
    ("sklearn", "datasets/images/flower.jpg", "flower.png"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "grace_hopper.png"),
    ("skimage", "data/hubble_deep_field.jpg", "hubble_deep_field.png"),
    ("skimage", "data/brick.png", "brick.png"),
    ("skimage", "data/grass.png", "grass.png"),
    ("skimage", "data/gravel.png", "gravel.png"),
    ("skimage", "data/coins.png", "coins.png"),
    ("skimage", "data/moon.png", "moon.png"),
    ("skimage", "data/ihc.png", "ihc.png"),
    ("skimage", "data/retina.jpg", "retina.png"),
]
HELD_OUT = [("skimage", "data/camera.png", "camera.png")]
PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def package_folder(module):
    """The folder of an installed package -> Path; SystemExit with the pip line where it is missing."""
    try:
        imported = __import__(module)
    except ImportError:
        raise SystemExit(f"error: {module} is not installed: pip install {PACKAGES[module]}") from None
    return Path(imported.__file__).resolve().parent


def rgb_pixels(path):
    """An image file -> (H, W, 3) uint8; grey and palette images become RGB, alpha is dropped."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def write(pixels, target):
    """Save (H, W, 3) uint8 as a PNG at target unless it holds these pixels already -> True if written."""
    if target.exists():
        try:
            if np.array_equal(rgb_pixels(target), pixels):
                return False
        except OSError:
            pass   # unreadable: written again
    partial = target.with_name(target.name + ".partial")
    Image.fromarray(pixels).save(partial, format="PNG")
    partial.replace(target)   # never a half-written photo under the real name
    return True


def make(folder):
    """Write folder/train/ and folder/held_out/ -> the number of files written (the others were there)."""
    written = 0
    for sub, entries in (("train", TRAIN), ("held_out", HELD_OUT)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for module, inside, name in entries:
            source = package_folder(module) / inside
            if not source.is_file():
                raise SystemExit(f"error: {source} is missing: this {PACKAGES[module]} does not ship it "
                                 f"(scikit-image 0.26 does)")
            written += write(rgb_pixels(source), folder / sub / name)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write train/ and held_out/ (created if missing)")
    args = parser.parse_args(argv)
    try:
        written = make(args.folder)
    except OSError as error:
        raise SystemExit(f"error: cannot write into {args.folder}: {error.strerror or error}") from None
    total = len(TRAIN) + len(HELD_OUT)
    print(f"{args.folder}: {len(TRAIN)} training photos in train/, {len(HELD_OUT)} in held_out/ "
          f"({written} of {total} written, {total - written} already there)")


if __name__ == "__main__":
    sys.exit(main())
