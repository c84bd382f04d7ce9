"""The plugin contract: registered task, default spec that validates, light entry point, working commands only."""

from tlkit.testing.contract import check_plugin_module_is_light, check_task_contract


def test_task_contract():
    check_task_contract("pose")


def test_plugin_module_imports_nothing_heavy():
    check_plugin_module_is_light("tlkit_pose.plugin")


def test_only_working_commands_are_registered():
    from tlkit.registry import get_registry

    reg = get_registry()
    task = reg.task("pose")
    assert [c.name for c in task.commands] == [
        "train",
        "dataset_convert",
        "evaluate",
        "inference",
        "prune",
        "compress",
        "export",
    ]
    assert ("pose", "coco_keypoints") in reg.dataset_formats()
    ev = next(c for c in task.commands if c.name == "evaluate")
    assert {o.name for o in ev.options} == {"predictions", "annotations", "image_root", "batch_size"}
    ex = next(c for c in task.commands if c.name == "export")
    assert {"sdk_compatible_model", "upsample_ratio", "cal_image_dir", "gen_ds_config"} <= {o.name for o in ex.options}
    assert task.build_model == "tlkit_pose.model:build_from_meta"
