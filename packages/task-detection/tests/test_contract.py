"""The detection task passes the core's task contract (spec model, default spec, commands, flags)."""

from tlkit.testing.contract import check_task_contract


def test_task_contract():
    check_task_contract("detection")


def test_every_spec_field_is_described():
    from pydantic import BaseModel

    from tlkit.config import TaskConfig
    from tlkit_detection.config import DetectionConfig

    def walk(model, path):
        for name, f in model.model_fields.items():
            ann = f.annotation
            sub = next(
                (
                    a
                    for a in (getattr(ann, "__args__", None) or (ann,))
                    if isinstance(a, type) and issubclass(a, BaseModel)
                ),
                None,
            )
            if sub is not None:
                walk(sub, f"{path}{name}.")
            elif not (model is DetectionConfig and name in TaskConfig.model_fields):
                assert f.description, f"{path}{name} has no description"

    walk(DetectionConfig, "")


def test_spec_sections_feed_the_library():
    from tlkit_detection.config import DetectionConfig

    cfg = DetectionConfig.model_validate(
        {
            "postprocessing_config": {
                "per_class": {"pedestrian": {"clustering_algorithm": "nms", "minimum_bounding_box_height": 8}}
            },
            "bbox_rasterizer_config": {
                "default": {"cov_radius_x": 0.8},
                "per_class": {"pedestrian": {"bbox_min_radius": 2}},
            },
        }
    )
    post = cfg.postprocessing_config.params(["car", "pedestrian"])
    assert post["car"].clustering_algorithm == "dbscan" and post["pedestrian"].clustering_algorithm == "nms"
    assert post["pedestrian"].minimum_bounding_box_height == 8
    car, ped = cfg.bbox_rasterizer_config.params(["car", "pedestrian"])
    assert car.cov_radius_x == 0.8 and ped.cov_radius_x == 0.4 and ped.bbox_min_radius == 2
