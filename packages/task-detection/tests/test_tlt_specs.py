"""NVIDIA's own DetectNet_v2 specs (tests/data/tlt, unmodified): they load, resolve to what TLT means and
round-trip through `spec import`; the tutorial's dataset_convert spec and training spec run on a tiny KITTI
set (paths overridden), evaluate without -r writes nothing; plus the VOC / COCO conversion options."""

import json
from pathlib import Path

import numpy as np
import pytest

from tlkit.config import read_spec
from tlkit.errors import DataError, SpecError
from tlkit.testing import make_context
from tlkit.testing.plugins import run_tlkit
from tlkit.testing.specs import files_under, import_round_trip
from tlkit_detection.config import DatasetExportConfig, DetectionConfig
from tlkit_detection.dataset_convert import run as convert_run
from tlkit_detection.records import RecordReader, find_manifest

DATA = Path(__file__).parent / "data" / "tlt"
EXPERIMENT_SPECS = [
    "detectnet_v2_train_resnet18_kitti.txt",
    "detectnet_v2_retrain_resnet18_kitti_qat.txt",
    "detectnet_v2_default_spec.txt",
]
EXPORT_SPECS = [
    "detectnet_v2_tfrecords_kitti_trainval.txt",
    "detectnet_v2_kitti_spec.txt",
    "detectnet_v2_coco_spec.txt",
]
INFERENCE_SPEC = "detectnet_v2_inference_kitti_tlt.txt"
KITTI_CLASSES = ["Car", "Pedestrian", "Cyclist", "Van", "Person_sitting"]


def convert(spec: Path, output: Path) -> dict:
    """`dataset_convert -d spec -o output` (RecordIO), in this process."""
    ctx = make_context("detection", "dataset_convert", output=output, options={"dataset_export_spec": spec})
    return convert_run(ctx)


def test_the_test_data_is_there():
    assert {p.name for p in DATA.iterdir()} >= {
        *EXPERIMENT_SPECS,
        *EXPORT_SPECS,
        INFERENCE_SPEC,
        "LICENSE",
        "NOTICE.md",
    }


@pytest.mark.parametrize("name", EXPERIMENT_SPECS)
def test_experiment_specs_load_and_round_trip(name, tmp_path):
    loaded, _, text = import_round_trip(DATA / name, DetectionConfig, tmp_path / "spec.yaml")
    assert loaded.format == "prototext" and loaded.resolved.tlt
    assert "# TLT training_config.num_epochs" in text
    # what tlkit does not implement is named, with its line
    assert any(
        ":training_config.visualizer: TLT key not implemented by tlkit" in w.replace(": ", ":", 1)
        for w in loaded.warnings
    )


@pytest.mark.parametrize("name", EXPORT_SPECS)
def test_export_specs_load_and_round_trip(name, tmp_path):
    loaded, _, _ = import_round_trip(DATA / name, DatasetExportConfig, tmp_path / "export.yaml")
    assert loaded.format == "prototext" and loaded.config.source() is not None


def test_tutorial_spec_means_what_tlt_means():
    loaded = read_spec(DATA / "detectnet_v2_train_resnet18_kitti.txt", DetectionConfig)
    c = loaded.config
    d, m, t = c.dataset_config, c.model, c.train_config
    assert d.data_sources[0].records_path == "/workspace/tao-experiments/data/tfrecords/kitti_trainval/*"
    assert d.target_class_mapping == {
        "car": "car",
        "cyclist": "cyclist",
        "pedestrian": "pedestrian",
        "person_sitting": "pedestrian",
        "van": "car",
    }
    assert (d.image_extension, d.validation_fold) == ("png", 0)
    assert (m.arch, m.n_layers, m.use_batch_norm) == ("resnet", 18, True)
    assert m.all_projections is False  # absent: TLT's proto default, not tlkit's
    assert t.pretrained_model_path.endswith("pretrained_detectnet_v2_vresnet18/resnet18.hdf5")
    assert (t.batch_size_per_gpu, t.n_epochs, t.checkpoint_interval, t.random_seed) == (4, 120, 10, 42)
    lr = t.lr_config
    assert (lr.type, lr.learning_rate, lr.min_learning_rate) == ("soft_start_annealing", 5e-5, 5e-7)
    assert lr.soft_start == pytest.approx(0.1) and lr.annealing == pytest.approx(0.7)
    assert (t.reg_config.type, t.reg_config.weight_decay) == ("L1", pytest.approx(3e-9))
    assert (t.optimizer.type, t.optimizer.beta1, t.optimizer.beta2) == (
        "adam",
        pytest.approx(0.9),
        pytest.approx(0.999),
    )
    pre = c.augmentation_config.preprocessing
    assert (pre.output_image_width, pre.output_image_height) == (1248, 384)
    col = c.augmentation_config.color_augmentation
    assert col.contrast_center == pytest.approx(127.5)  # TLT's 0.5 on [0, 1] images
    assert col.hue_rotation_max == 25.0
    car = c.postprocessing_config.for_class("car")
    assert (
        car.clustering_algorithm,
        car.dbscan_confidence_threshold,
        car.dbscan_eps,
        car.dbscan_min_samples,
        car.minimum_bounding_box_height,
    ) == ("dbscan", 0.9, pytest.approx(0.2), 1, 20)
    assert c.postprocessing_config.for_class("pedestrian").coverage_threshold == pytest.approx(0.0075)
    cyc = c.cost_function_config.for_class("cyclist")
    assert (cyc.class_weight, cyc.cov_weight, cyc.bbox_weight) == (8.0, 1.0, 10.0)
    assert c.cost_function_config.enable_autoweighting is False
    assert c.bbox_rasterizer_config.for_class("cyclist").cov_radius_x == 1.0
    assert c.bbox_rasterizer_config.deadzone_radius == pytest.approx(0.4)
    ev = c.evaluation_config
    assert ev.minimum_detection_ground_truth_overlap["car"] == pytest.approx(0.7)
    assert ev.per_class_box_config["car"].minimum_width == 10 and ev.average_precision_mode == "INTEGRATE"
    assert (ev.validation_period_during_training, ev.first_validation_epoch) == (10, 30)
    # cyclist's bbox weight_target differs from its initial weight, but auto-weighting is off: nothing to warn
    assert [w.split(": ")[1] for w in loaded.warnings] == ["training_config.visualizer"]


def test_inference_spec(tmp_path):
    loaded, _, _ = import_round_trip(DATA / INFERENCE_SPEC, DetectionConfig, tmp_path / "spec.yaml")
    c = loaded.config
    assert (c.inference_config.kitti_dump, c.inference_config.overlay_linewidth, c.inference_config.batch_size) == (
        True,
        2,
        16,
    )
    post = c.postprocessing_config
    assert sorted(post.per_class) == ["car", "cyclist", "pedestrian"]
    assert (post.default.clustering_algorithm, post.default.dbscan_eps, post.default.minimum_bounding_box_height) == (
        "dbscan",
        0.3,
        4,
    )
    assert post.for_class("car").confidence_model == "aggregate_cov"
    assert loaded.warnings == []  # class names, input size, colours: the model file and tlkit say them
    assert c.model.use_batch_norm is True  # an inference spec gets no TLT model defaults: the model file has its layers


def test_qat_retrain_spec_and_export_specs():
    loaded = read_spec(DATA / "detectnet_v2_retrain_resnet18_kitti_qat.txt", DetectionConfig)
    assert loaded.config.train_config.load_graph is True  # TLT's model_config.load_graph
    assert loaded.config.train_config.enable_qat is True  # TLT's QAT retraining: tlkit.qat
    assert not any("enable_qat" in w for w in loaded.warnings)
    kitti = read_spec(DATA / "detectnet_v2_kitti_spec.txt", DatasetExportConfig).config.kitti_config
    assert (kitti.partition_mode, kitti.num_partitions, kitti.num_shards) == (
        "sequence",
        5,
        1,
    )  # TLT's 0 shards: 1 file
    # TLT reads the sequence file from the dataset root
    assert (
        kitti.kitti_sequence_to_frames_file
        == "/home/projects.dlar_artifacts/kitti_detection/training/kitti_sequence_to_frames.json"
    )
    coco = read_spec(DATA / "detectnet_v2_coco_spec.txt", DatasetExportConfig)
    root = "/home/scratch.metropolis3/yuw/datasets/coco/raw-data"
    assert coco.config.coco_config.annotation_file == [
        f"{root}/annotations/instances_val2017.json",
        f"{root}/annotations/instances_train2017.json",
    ]
    assert coco.config.coco_config.image_directory_path == [f"{root}/val2017", f"{root}/train2017"]
    assert any("coco_config.num_shards: [32, 256]" in w for w in coco.warnings)


def write_tlt_kitti(root: Path, n: int = 8) -> Path:
    """A tiny KITTI training folder in TLT's layout (image_2/, label_2/) with KITTI's class names."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "image_2").mkdir(parents=True)
    (root / "label_2").mkdir(parents=True)
    for i in range(n):
        img = rng.integers(0, 255, (96, 312, 3)).astype(np.uint8)
        lines = []
        for k in range(2):
            x = 20 + 150 * k
            img[20:60, x : x + 60] = (200, 60 * k, 30)
            lines.append(f"{KITTI_CLASSES[(i + k) % 5]} 0.00 0 0.00 {x} 20 {x + 60} 60 0 0 0 0 0 0 0")
        Image.fromarray(img).save(root / "image_2" / f"{i:06d}.png")
        (root / "label_2" / f"{i:06d}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_tutorial_convert_train_and_evaluate_without_results_dir(tmp_path):
    """The NVIDIA tutorial's two specs unchanged: the paths, the epochs and the pretrained file are overridden
    on the command line with TLT's own key names; the training spec's tfrecords_path glob finds the converted set."""
    kitti = write_tlt_kitti(tmp_path / "training")
    prefix = tmp_path / "tfrecords" / "kitti_trainval" / "kitti_trainval"
    p = run_tlkit(
        [
            "detection",
            "dataset_convert",
            "-d",
            str(DATA / "detectnet_v2_tfrecords_kitti_trainval.txt"),
            "-o",
            str(prefix),
            f"kitti_config.root_directory_path={kitti}",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "8 images, 16 objects kept" in p.stdout and "fold 0: 1, fold 1: 7" in p.stdout  # val_split 14 %
    assert json.loads(Path(f"{prefix}.json").read_text())["image_extension"] == ".png"

    spec = DATA / "detectnet_v2_train_resnet18_kitti.txt"
    out = tmp_path / "train"
    p = run_tlkit(
        [
            "detection",
            "train",
            "-e",
            str(spec),
            "-r",
            str(out),
            "--gpus",
            "0",
            f"dataset_config.data_sources=[{{tfrecords_path: '{prefix.parent}/*'}}]",
            "training_config.num_epochs=1",
            "model_config.pretrained_model_file=null",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "3 classes ['car', 'cyclist', 'pedestrian']" in p.stdout  # van -> car, person_sitting -> pedestrian
    assert "training_config.visualizer: TLT key not implemented by tlkit" in p.stderr
    assert (
        out / "weights" / "model.tlk"
    ).is_file() and "mean average precision" in p.stdout  # the last epoch validates

    before = files_under(tmp_path)
    p = run_tlkit(
        [
            "detection",
            "evaluate",
            "-e",
            str(spec),
            "-m",
            str(out / "weights" / "model.tlk"),
            "--gpus",
            "0",
            f"dataset_config.data_sources=[{{tfrecords_path: '{prefix}.json'}}]",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "average precision" in p.stdout and "Median Inference Time" in p.stdout
    assert files_under(tmp_path) == before

    # the tutorial's inference spec, unchanged, on two images
    images = tmp_path / "infer_images"
    images.mkdir()
    for name in ("000000.png", "000001.png"):
        (images / name).write_bytes((kitti / "image_2" / name).read_bytes())
    p = run_tlkit(
        [
            "detection",
            "inference",
            "-e",
            str(DATA / INFERENCE_SPEC),
            "-m",
            str(out / "weights" / "model.tlk"),
            "-i",
            str(images),
            "-r",
            str(tmp_path / "infer"),
            "--gpus",
            "0",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert sorted(q.name for q in (tmp_path / "infer" / "labels").glob("*.txt")) == ["000000.txt", "000001.txt"]


def test_records_path_accepts_tlt_globs(tmp_path, write_image):
    from test_records import make_kitti

    make_kitti(tmp_path / "data", write_image, n=6)
    spec = tmp_path / "export.yaml"
    spec.write_text("kitti_config:\n  root_directory_path: data\n  val_split: 34\n  num_shards: 2\n")
    convert(spec=spec, output=tmp_path / "rec" / "set")
    manifest = tmp_path / "rec" / "set.json"
    for given in (
        manifest,
        tmp_path / "rec" / "set",
        tmp_path / "rec",
        f"{tmp_path}/rec/*",
        f"{tmp_path}/rec/set-fold-*",
    ):
        assert find_manifest(given) == manifest
    assert len(RecordReader(f"{tmp_path}/rec/*", folds=[1])) == 4
    with pytest.raises(DataError, match="matches no dataset_convert manifest"):
        find_manifest(f"{tmp_path}/nothing/*")
    (tmp_path / "rec" / "other.json").write_text(manifest.read_text())
    with pytest.raises(DataError, match="matches 2 manifests"):
        find_manifest(f"{tmp_path}/rec/*")


def write_voc(
    root: Path, write_image, names=("a", "b", "c", "d"), image_dir="JPEGImages", ann_dir="Annotations"
) -> Path:
    obj = (
        "<object><name>cat</name><difficult>0</difficult>"
        "<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>"
    )
    (root / ann_dir).mkdir(parents=True)
    for i, n in enumerate(names):
        write_image(root / image_dir / f"{n}.jpg", 32, 24, seed=i)
        (root / ann_dir / f"{n}.xml").write_text(f"<annotation><filename>{n}.jpg</filename>{obj}</annotation>")
    return root


def test_voc_folder_names_list_split_and_no_empty_shards(tmp_path, write_image):
    write_voc(tmp_path / "voc", write_image, image_dir="images", ann_dir="xml")
    (tmp_path / "val.txt").write_text("b\nd 1\n")  # VOC ImageSets lines may carry a flag
    spec = tmp_path / "export.yaml"
    spec.write_text(
        "voc_config:\n  root_directory_path: voc\n  image_dir_name: images\n  annotation_dir_name: xml\n"
        "  partition_mode: list\n  val_list: val.txt\n  num_shards: 3\n"
    )
    res = convert(spec=spec, output=tmp_path / "rec" / "voc")
    manifest = json.loads(Path(res["manifest"]).read_text())
    assert manifest["frames_per_fold"] == [2, 2] and manifest["frames_in_no_fold"] == 0
    assert [s["frames"] for s in manifest["shards"] if s["fold"] == 0] == [["b"], ["d"]]  # at most one shard per frame
    assert all(p.stat().st_size > 0 for p in (tmp_path / "rec").glob("*.rec"))
    # a train list too: frames in neither list are left out, and said so
    (tmp_path / "train.txt").write_text("a\n")
    spec.write_text(spec.read_text() + "  train_list: train.txt\n")
    res = convert(spec=spec, output=tmp_path / "rec" / "voc")
    manifest = json.loads(Path(res["manifest"]).read_text())
    assert manifest["frames_per_fold"] == [2, 1] and manifest["frames_in_no_fold"] == 1
    # val_split 0: the empty validation fold writes no files at all
    spec.write_text(
        "voc_config:\n  root_directory_path: voc\n  image_dir_name: images\n  annotation_dir_name: xml\n"
        "  val_split: 0\n"
    )
    convert(spec=spec, output=tmp_path / "rec0" / "voc")
    assert sorted(p.name for p in (tmp_path / "rec0").iterdir() if "fold-000" in p.name) == []
    # the wrong folder name is named, with the folders that are there
    spec.write_text("voc_config:\n  root_directory_path: voc\n")
    with pytest.raises(
        DataError,
        match=r"not a Pascal VOC folder: no Annotations/ \(set annotation_dir_name; its folders: \['images', 'xml'\]\)",
    ):
        convert(spec=spec, output=tmp_path / "x")
    with pytest.raises(SpecError, match="partition_mode 'list' needs val_list"):
        read_spec(
            tmp_path / "bad.yaml"
            if (tmp_path / "bad.yaml").write_text("voc_config:\n  root_directory_path: voc\n  partition_mode: list\n")
            else None,
            DatasetExportConfig,
        )


def test_kitti_image_extension_is_inferred(tmp_path, write_image):
    from tlkit_detection.dataset_convert import infer_extension

    root = tmp_path / "k"
    (root / "labels").mkdir(parents=True)
    for i in range(3):
        write_image(root / "images" / f"{i}.jpg", 16, 16, seed=i)
        (root / "labels" / f"{i}.txt").write_text("car 0 0 0 1 1 8 8 0 0 0 0 0 0 0\n")
    assert infer_extension(root / "images") == "jpg"
    spec = tmp_path / "export.txt"
    spec.write_text('kitti_config { root_directory_path: "k" num_shards: 1 }\n')  # TLT text, no image_extension
    res = convert(spec=spec, output=tmp_path / "rec" / "k")
    assert res["report"]["images"] == 3
    assert json.loads(Path(res["manifest"]).read_text())["image_extension"] == "jpg"
    spec.write_text('kitti_config { root_directory_path: "k" image_extension: "png" }\n')
    with pytest.raises(DataError, match=r"no images with extension \.png \(the folder holds \.jpg"):
        convert(spec=spec, output=tmp_path / "rec" / "k")


def test_tlt_coco_spec_makes_one_fold_per_annotation_file(tmp_path, write_image):
    for split, names in (("val2017", ["v1"]), ("train2017", ["t1", "t2", "t3"])):
        images = [{"id": i + 1, "file_name": f"{n}.jpg", "width": 32, "height": 24} for i, n in enumerate(names)]
        for i, n in enumerate(names):
            write_image(tmp_path / "coco" / split / f"{n}.jpg", 32, 24, seed=i)
        anns = [
            {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0}
            for i in range(len(names))
        ]
        (tmp_path / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
        (tmp_path / "coco" / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]})
        )
    spec = tmp_path / "coco_spec.txt"  # NVIDIA's coco_spec.txt with this root
    spec.write_text(
        (DATA / "detectnet_v2_coco_spec.txt")
        .read_text()
        .replace("/home/scratch.metropolis3/yuw/datasets/coco/raw-data/", f"{tmp_path}/coco/")
    )
    res = convert(spec=spec, output=tmp_path / "rec" / "coco")
    manifest = json.loads(Path(res["manifest"]).read_text())
    assert manifest["frames_per_fold"] == [1, 3] and manifest["classes"] == ["person"]
    assert res["report"]["images"] == 4
