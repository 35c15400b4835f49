"""Write a toy image folder: 4 classes (circle, square, triangle, cross) of 32x32 PNGs, 12 training and 4 test images
per class, in datasets' `imagefolder` layout: OUT/train/<class>/*.png and OUT/test/<class>/*.png.

    python examples/imagefolder/make_shapes.py OUT
"""

import os
import sys

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross")


def draw(shape: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
    pen = ImageDraw.Draw(image)
    r = int(rng.integers(7, 12))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
    colour = tuple(int(v) for v in rng.integers(150, 256, 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        pen.rectangle((cx - r, cy - 2, cx + r, cy + 2), fill=colour)
        pen.rectangle((cx - 2, cy - r, cx + 2, cy + r), fill=colour)
    return image


def main(out: str, train: int = 12, test: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for shape in SHAPES:
            os.makedirs(os.path.join(out, split, shape), exist_ok=True)
            for i in range(count):
                draw(shape, rng).save(os.path.join(out, split, shape, f"{i}.png"))


if __name__ == "__main__":
    main(sys.argv[1])
