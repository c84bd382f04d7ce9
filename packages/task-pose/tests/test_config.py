"""The pose spec: defaults, TLT key names, clear errors."""

import pytest

from tlkit.config import load_spec
from tlkit.errors import SpecError
from tlkit_pose.config import InferenceConfig, PoseConfig


def test_defaults_are_tlts():
    cfg = PoseConfig()
    assert cfg.stride == 8 and cfg.dataloader.image_dims == [256, 256, 3] and cfg.pose_config.target_shape == [32, 32]
    assert (
        cfg.label_processor_config.heatmap_gaussian_sigma == 7.0
        and cfg.label_processor_config.paf_ortho_dist_thresh == 1.0
    )
    i = cfg.inference
    assert (i.heatmap_threshold, i.paf_threshold, i.heatmap_gaussian_sigma, i.heatmap_gaussian_kernel) == (
        0.1,
        0.05,
        3.0,
        5,
    )
    assert (
        i.line_integral_samples_num,
        i.line_integral_count_threshold,
        i.num_parts_thresh,
        i.overall_score_thresh,
    ) == (10, 0.8, 4, 0.4)


def test_every_field_is_described():
    def walk(model):
        for name, f in model.model_fields.items():
            sub = f.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                walk(sub)
            elif name != "train_config":
                assert f.description, f"{model.__name__}.{name} has no description"

    walk(PoseConfig)


def test_stride_mismatch_and_bad_values_name_the_key(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text("dataloader:\n  image_dims: [256, 256, 3]\npose_config:\n  target_shape: [32, 30]\n")
    with pytest.raises(SpecError, match="same whole multiple of pose_config.target_shape 32x30"):
        load_spec(p, PoseConfig)
    p.write_text("inference:\n  heatmap_gaussian_kernel: 4\n")
    with pytest.raises(SpecError, match=r"spec.yaml:2: inference.heatmap_gaussian_kernel: .*must be odd"):
        load_spec(p, PoseConfig)
    with pytest.raises(
        SpecError, match=r"inference.heatmp_threshold: unknown key \(did you mean 'heatmap_threshold'\?\)"
    ):
        load_spec(None, PoseConfig, ["inference.heatmp_threshold=0.2"])
    with pytest.raises(SpecError, match="non-empty list of positive scales"):
        load_spec(None, PoseConfig, ["inference.scales=[]"])
    assert load_spec(None, PoseConfig, ["inference.scales=[0.5, 1.0]"]).inference.scales == [0.5, 1.0]
    assert InferenceConfig(scales=[2.0]).scales == [2.0]
