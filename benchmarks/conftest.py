import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def jpeg_folder(tmp_path_factory):
    """300 smooth random 256x256 JPEGs (quality 90) in 6 class folders (the input-pipeline benchmarks' data)."""
    import cv2

    root = tmp_path_factory.mktemp("jpegs")
    rs = np.random.RandomState(0)
    for c in range(6):
        (root / f"class{c}").mkdir()
        for k in range(50):
            small = rs.randint(0, 256, (16, 16, 3)).astype(np.uint8)
            img = cv2.resize(small, (256, 256), interpolation=cv2.INTER_CUBIC)
            img = np.clip(img.astype(np.int16) + rs.randint(-12, 13, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / f"class{c}" / f"{k:03d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return root
