"""The plugin contract: registration, a light entry point, a default spec that validates."""

from tlkit.testing.contract import check_plugin_module_is_light, check_task_contract


def test_plugin_module_imports_nothing_heavy():
    check_plugin_module_is_light("tlkit_classification.plugin")


def test_task_contract():
    check_task_contract("classification")


def test_registered_commands_and_formats():
    from tlkit.registry import get_registry

    reg = get_registry()
    task = reg.task("classification")
    assert [c.name for c in task.commands] == [
        "train",
        "evaluate",
        "inference",
        "prune",
        "compress",
        "export",
        "calibration_tensorfile",
        "dataset_convert",
        "demo",
    ]
    formats = reg.dataset_formats()
    assert [n for (t, n) in formats if t == "classification"] == ["voc"]
    opts = {o.name for o in next(c for c in task.commands if c.name == "inference").options}
    assert {"image", "image_dir", "batch_size", "classmap", "top_k"} <= opts
