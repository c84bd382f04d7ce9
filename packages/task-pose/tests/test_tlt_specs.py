"""NVIDIA's own BodyPoseNet specs (tests/data/tlt, unmodified): the training, inference and dataset specs load,
resolve to what TLT means and round-trip through `spec import`; TLT's flow (dataset_convert -d coco_spec.json,
then train with the tutorial spec) runs on tiny generated data; evaluate without -r writes nothing."""

import json
from pathlib import Path

import pytest

from tlkit.config import read_spec
from tlkit.errors import SpecError
from tlkit.testing.plugins import run_tlkit
from tlkit.testing.specs import files_under, import_round_trip
from tlkit_pose.config import PoseConfig, PoseDatasetSpec

DATA = Path(__file__).parent / "data" / "tlt"
SPECS = ["bpnet_train_m1_coco.yaml", "bpnet_retrain_m1_coco.yaml", "infer_spec_refine.yaml", "infer_spec_strict.yaml"]


def test_the_test_data_is_there():
    assert {p.name for p in DATA.iterdir()} >= {*SPECS, "coco_spec.json", "LICENSE", "NOTICE.md"}


@pytest.mark.parametrize("name", SPECS)
def test_specs_load_and_round_trip(name, tmp_path):
    loaded, _, _ = import_round_trip(DATA / name, PoseConfig, tmp_path / "spec.yaml")
    assert loaded.format == "yaml" and loaded.resolved.tlt


def test_training_spec_means_what_tlt_means():
    loaded = read_spec(DATA / "bpnet_train_m1_coco.yaml", PoseConfig)
    c = loaded.config
    t = c.train_config
    assert (t.n_epochs, t.batch_size_per_gpu, t.checkpoint_interval, t.validation_period, t.random_seed) == (
        20,
        10,
        5,
        5,
        42,
    )
    assert t.pretrained_model_path.endswith("bodyposenet_vtrainable_v1.0/model.tlt") and t.load_graph is False
    assert (t.optimizer.type, t.optimizer.momentum, t.optimizer.nesterov) == ("sgd", 0.9, False)
    lr = t.lr_config
    assert (lr.type, lr.learning_rate, lr.min_learning_rate, lr.soft_start, lr.annealing) == (
        "soft_start_annealing",
        2e-5,
        8e-8,
        0.05,
        0.5,
    )
    assert (t.reg_config.type, t.reg_config.weight_decay) == ("L1", 5e-4)
    assert (c.model.arch, c.model.stages, c.model.use_stagewise_lr_multipliers) == ("vgg19", 3, True)
    assert c.dataloader.image_dims == [256, 256, 3] and c.pose_config.target_shape == [32, 32]
    assert c.dataloader.train_records == ["/workspace/tao-experiments/bpnet/data/train*-fold-000-of-001*.rec"]
    a = c.augmentation_config
    assert (
        a.spatial_augmentation_mode,
        a.flip_lr_prob,
        a.rotate_deg_max,
        a.translate_max_x,
        a.target_person_scale,
    ) == ("person_centric", 0.5, 40.0, 40.0, 0.6)
    assert c.label_processor_config.heatmap_gaussian_sigma == 7.0
    # the dataset spec json it names is on NVIDIA's machine: said so, with what to set instead
    assert any(
        "dataset_specs.coco: cannot read /workspace/examples/bpnet/data_pose_config/coco_spec.json" in w
        for w in loaded.warnings
    )
    assert read_spec(DATA / "bpnet_retrain_m1_coco.yaml", PoseConfig).config.train_config.load_graph is True


def test_inference_specs():
    inf = read_spec(DATA / "infer_spec_refine.yaml", PoseConfig).config.inference
    assert (inf.scales, inf.input_height, inf.output_upsampling_factor, inf.heatmap_threshold, inf.paf_threshold) == (
        [0.5, 1.0, 1.5, 2.0],
        368,
        8,
        0.1,
        0.05,
    )
    loaded = read_spec(DATA / "infer_spec_strict.yaml", PoseConfig)
    assert loaded.config.inference.scales == [1.0]  # multi_scale_inference: False
    assert loaded.config.inference.input_height == 288
    assert any(
        "keep_aspect_ratio_mode: TLT key not implemented by tlkit" in w for w in loaded.warnings
    )  # pad_image_input


def test_dataset_spec(tmp_path):
    loaded, _, _ = import_round_trip(DATA / "coco_spec.json", PoseDatasetSpec, tmp_path / "dataset.yaml")
    ds = loaded.config
    assert ds.root_directory_path == "/workspace/tao-experiments/bpnet/data"
    assert ds.train_data.annotation_root_dir_path == "annotations/person_keypoints_train2017.json"
    assert ds.test_data.images_root_dir_path == "val2017"
    assert [w.split(": ")[1] for w in loaded.warnings] == ["data_filtering_params"]


def test_unknown_topology_and_backbone_are_errors(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "__class_name__: BpNetTrainer\ndataloader:\n  pose_config:\n    pose_config_path: x/bpnet_14joints.json\n"
    )
    with pytest.raises(
        SpecError,
        match=r"spec.yaml:4: dataloader.pose_config.pose_config_path: 'x/bpnet_14joints.json': "
        r"tlkit has the bpnet_18joints topology only",
    ):
        read_spec(spec, PoseConfig)
    spec.write_text("model:\n  backbone_attributes:\n    architecture: alexnet\n")
    with pytest.raises(SpecError, match=r"spec.yaml:2: model.backbone_attributes: architecture 'alexnet'"):
        read_spec(spec, PoseConfig)


def test_tlt_flow_convert_train_evaluate(tmp_path):
    """TLT's BodyPoseNet steps with NVIDIA's specs: dataset_convert -d <dataset spec> -o data/train, then train
    with the tutorial spec, whose records glob and dataset spec now point at this machine's files."""
    from tlkit_pose.synthetic import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data / "train2017", n_images=4, seed=1, size=(256, 256))
    generate_dataset(data / "val2017", n_images=2, seed=2, size=(256, 256))
    dataset_spec = json.loads((DATA / "coco_spec.json").read_text())  # NVIDIA's, with this machine's paths
    dataset_spec.update(
        root_directory_path=str(data),
        train_data={"images_root_dir_path": "train2017", "annotation_root_dir_path": "train2017/annotations.json"},
        test_data={"images_root_dir_path": "val2017", "annotation_root_dir_path": "val2017/annotations.json"},
    )
    (tmp_path / "coco_spec.json").write_text(json.dumps(dataset_spec))
    p = run_tlkit(
        [
            "pose",
            "dataset_convert",
            "-d",
            str(tmp_path / "coco_spec.json"),
            "-o",
            str(data / "train"),
            "--mode",
            "train",
            "--generate_masks",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "Wrote 4 images" in p.stdout and "data_filtering_params: TLT key not implemented" in p.stderr

    out = tmp_path / "train"
    p = run_tlkit(
        [
            "pose",
            "train",
            "-e",
            str(DATA / "bpnet_train_m1_coco.yaml"),
            "-r",
            str(out),
            "--gpus",
            "0",
            f"dataloader.dataset_config.dataset_specs.coco={tmp_path / 'coco_spec.json'}",
            f"dataloader.dataset_config.train_records_folder_path={data}",
            "num_epoch=1",
            "pretrained_weights=null",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "train: 4 images; model vgg19, 3 stages" in p.stdout and "AP" in p.stdout  # validated on val2017
    assert (out / "weights" / "model.tlk").is_file()

    before = files_under(tmp_path)
    p = run_tlkit(
        [
            "pose",
            "evaluate",
            "-e",
            str(DATA / "infer_spec_strict.yaml"),
            "-m",
            str(out / "weights" / "model.tlk"),
            "-a",
            str(data / "val2017" / "annotations.json"),
            "--gpus",
            "0",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "people detected" in p.stdout and "Running test for keypoints results." in p.stdout
    assert files_under(tmp_path) == before
