"""Copy picture folders small enough to carry to a machine without network (a lent GPU):
    python scripts/pack_pictures.py OUT [DIR ...]   (default: Debian's picture folders)
Each picture is written at most 512 px across (PNG keeps its alpha; others become JPEG), under
the same file name, so the layers world's train/eval split (by name) is the same there."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from pipeline.layers.dataset import default_images
from pipeline.layers.sources import SUFFIXES

SIDE = 512


def main(out: str, folders: list[str]) -> None:
    count = 0
    for folder in folders:
        root = Path(folder)
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES):
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None or image.size == 0:
                continue
            scale = SIDE / max(image.shape[:2])
            if scale < 1:
                size = (
                    max(1, round(image.shape[1] * scale)),
                    max(1, round(image.shape[0] * scale)),
                )
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            keep_png = path.suffix.lower() == ".png"
            target = Path(out) / root.name / path.relative_to(root)
            target = target.with_suffix(".png" if keep_png else ".jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), image, [] if keep_png else [cv2.IMWRITE_JPEG_QUALITY, 90])
            count += 1
    print(f"{count} pictures -> {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or default_images())
