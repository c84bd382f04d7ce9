from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
COCO_MINI = SHARED_DATA / "coco-keypoints-mini" / "test_coco.json"


@pytest.fixture
def coco_mini() -> Path:
    """The real COCO keypoints sample (4 val2017 images, 14 people), or skip when this checkout has none."""
    if not COCO_MINI.is_file():
        pytest.skip(f"{COCO_MINI} not present (real datasets live in ../shared/data beside the repo)")
    return COCO_MINI


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory) -> Path:
    """8 generated images (256x320) with 1-4 people, some crowd regions and unannotated people."""
    from tlkit_pose.synthetic import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("synthetic"), n_images=8, seed=7, size=(256, 320), crowd_prob=0.4, unlabeled_prob=0.15
    )
