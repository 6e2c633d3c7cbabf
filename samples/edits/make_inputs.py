"""Render the sample input images of the example edit specs from the sample world.

    python samples/edits/make_inputs.py            # writes the PNGs beside this file (skips existing ones)

The images are scenes of ``taocache.world`` at 64x64, the embedded model's size, so the example edits in
``world.toml`` run on the embedded text-to-image model as they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from taocache.world import Scene, render

INPUTS = {
    "red_circle_left.png": (Scene("circle", "red", "small", "dark", position="left"), 3),
    "blue_square_large_centre.png": (Scene("square", "blue", "large", "light", position="centre"), 5),
    "yellow_triangle_top.png": (Scene("triangle", "yellow", "small", "dark", position="top"), 7),
    "green_circle_small_bottom.png": (Scene("circle", "green", "small", "light", position="bottom"), 11),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="overwrite existing images")
    args = parser.parse_args(argv)
    for name, (scene, seed) in INPUTS.items():
        path = HERE / name
        if path.exists() and not args.force:
            continue
        pixels = np.clip(np.rint(render(scene, seed=seed) * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path)
        print(f"{path.name}: {scene.caption}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
