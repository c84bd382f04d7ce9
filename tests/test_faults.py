"""The fault-injection table (issue 18): bad inputs and faults a new user meets, through the real CLI.

Each case builds its inputs in a fresh folder, then runs `tlkit ...` in-process (`tlkit.cli.main`, what the
script calls) and asserts, for an error: a non-zero exit, exactly one `error:` line on stderr that names the
file or key at fault, no traceback, and no file in the folder changed, added or removed; for a warning (a
run that goes on without what it could not use): exit 0, a line naming what was skipped, and the
pre-existing files unchanged. Faults of the machine (unwritable folders, a full disk) are injected with
`tlkit.testing.faults` (which also works as root, where chmod does not stop writes).

`CASES` is the table; `test_fault_table_size` keeps it at the issue's bar (>= 60 distinct faults). Tiny data
and untrained tiny models keep the whole table at about a minute on 2 cores.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("mxnet")
pytest.importorskip("tlkit_classification")
pytest.importorskip("tlkit_detection")
pytest.importorskip("tlkit_pose")

from tlkit.testing.faults import (  # noqa: E402
    assert_clean_failure,
    assert_reported,
    assert_unchanged,
    deny_writes,
    disk_full,
    run_cli,
    snapshot,
)

# -- shared inputs, built once per session and copied into a case's folder when it uses them ------------


def _png(path: Path, seed: int = 0, size: tuple[int, int] = (40, 32)) -> Path:
    import cv2

    rs = np.random.RandomState(seed)
    small = rs.randint(0, 256, (4, 4, 3)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.resize(small, size, interpolation=cv2.INTER_LINEAR))
    return path


def truncated_jpeg(path: Path, seed: int = 0) -> Path:
    """A JPEG cut to 60% of its bytes: its header still reads, its pixels do not all decode."""
    import cv2

    rs = np.random.RandomState(seed)
    img = cv2.resize(rs.randint(0, 256, (4, 4, 3)).astype(np.uint8), (64, 48))
    ok, buf = cv2.imencode(".jpg", img)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes()[: int(len(buf) * 0.6)])
    return path


def write_kitti(root: Path, n: int = 8) -> Path:
    """n 128x96 PNG frames with one or two coloured boxes, KITTI labels (classes red, blue)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(90, 160, (96, 128, 3)).astype(np.uint8)
        lines = []
        for k in range(1 + i % 2):
            cls = ("red", "blue")[(i + k) % 2]
            x1, y1 = 8 + 60 * k, 20
            img[y1 : y1 + 30, x1 : x1 + 30] = (220, 30, 30) if cls == "red" else (30, 30, 220)
            lines.append(f"{cls} 0.00 0 0.00 {x1} {y1} {x1 + 30} {y1 + 30} 0 0 0 0 0 0 0")
        Image.fromarray(img).save(root / "images" / f"{i:04d}.png")
        (root / "labels" / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    return root


class Assets:
    """Inputs several cases share (built on first use)."""

    def __init__(self, root: Path):
        self.root = root

    @cached_property
    def cls_data(self) -> Path:
        from tlkit_classification.demo_data import make_shapes_dataset

        make_shapes_dataset(self.root / "shapes" / "train", 4, 32, seed=0)
        make_shapes_dataset(self.root / "shapes" / "val", 2, 32, seed=1)
        return self.root / "shapes"

    def cls_spec_text(self, data: Path | None = None, **extra: Any) -> str:
        data = data or self.cls_data
        spec = {
            "model_config": {"arch": "mobilenet_v2", "input_image_size": "3,32,32"},
            "dataset_config": {"train_dataset_path": str(data / "train"), "val_dataset_path": str(data / "val")},
            "train_config": {"n_epochs": 1, "batch_size_per_gpu": 4, "n_workers": 1},
        }
        for k, v in extra.items():
            *path, last = k.split(".")
            cur = spec
            for p in path:
                cur = cur.setdefault(p, {})
            cur[last] = v
        return json.dumps(spec)  # JSON is YAML

    @cached_property
    def cls_run(self) -> Path:
        """A results dir of a finished 1-epoch classification training (classes circle, square, triangle)."""
        spec = self.root / "cls_spec.yaml"
        spec.write_text(self.cls_spec_text())
        r = self.root / "cls_run"
        from tlkit.cli import main

        with pytest.raises(SystemExit) as e:
            main(["classification", "train", "-e", str(spec), "-r", str(r)])
        assert e.value.code in (0, None)
        return r

    @cached_property
    def cls_model(self) -> Path:
        return self.cls_run / "weights" / "model.tlk"

    @cached_property
    def kitti(self) -> Path:
        return write_kitti(self.root / "kitti")

    @cached_property
    def det_manifest(self) -> Path:
        from tlkit_detection.config import PartitionConfig
        from tlkit_detection.convert import read_kitti
        from tlkit_detection.records import write_records

        samples, report = read_kitti(self.kitti)
        write_records(samples, self.root / "det" / "ds", PartitionConfig(val_split=25, num_shards=1), report)
        return self.root / "det" / "ds.json"

    def det_spec_text(self, manifest: Path, **extra: Any) -> str:
        spec = {
            "dataset_config": {"data_sources": [{"records_path": str(manifest)}], "validation_fold": 0},
            "model_config": {"arch": "resnet", "n_layers": 10},
            "augmentation_config": {"preprocessing": {"output_image_width": 64, "output_image_height": 48}},
            "train_config": {"batch_size_per_gpu": 2, "n_epochs": 1, "n_workers": 1},
        }
        for k, v in extra.items():
            *path, last = k.split(".")
            cur = spec
            for p in path:
                cur = cur.setdefault(p, {})
            cur[last] = v
        return json.dumps(spec)

    @cached_property
    def det_model(self) -> Path:
        import mxnet as mx

        from tlkit.model_io import save_net
        from tlkit_detection.config import DetectionConfig
        from tlkit_detection.model import build_for_training

        cfg = DetectionConfig.model_validate(json.loads(self.det_spec_text(self.root / "none.json")))
        built = build_for_training(cfg, ["blue", "red"], [mx.cpu()])
        return save_net(self.root / "det.tlk", built.net, built.meta)

    @cached_property
    def pose_coco(self) -> Path:
        from tlkit_pose.synthetic import generate_dataset

        return generate_dataset(self.root / "pose", n_images=3, seed=1, size=(64, 48))

    @cached_property
    def pose_model(self) -> Path:
        import mxnet as mx

        from tlkit.model_io import save_net
        from tlkit_pose.config import PoseConfig
        from tlkit_pose.model import build_meta, build_net

        cfg = PoseConfig.model_validate(json.loads(self.pose_spec_text()))
        meta = build_meta(cfg)
        mx.random.seed(0)
        net = build_net(meta["build"])
        net.initialize(mx.init.Xavier())
        net(mx.nd.zeros((1, *meta["input_shape"])))
        return save_net(self.root / "pose.tlk", net, meta)

    def pose_spec_text(self, **dataloader: Any) -> str:
        return json.dumps(
            {
                "dataloader": {"image_dims": [48, 64, 3], **dataloader},
                "pose_config": {"target_shape": [6, 8]},
                "model": {"arch": "mobilenet_v2", "backbone_blocks": 3, "stages": 2, "stage_channels": 8},
                "train_config": {"n_epochs": 1, "batch_size_per_gpu": 2, "n_workers": 1},
            }
        )


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    return Assets(tmp_path_factory.mktemp("fault-assets"))


# -- the table ---------------------------------------------------------------------------------------------


@dataclass
class Expect:
    args: list[Any]
    match: str  # regex the error (or warning) line must match
    names: list[Any] = field(default_factory=list)  # what the line must name (file, key, flag)
    kind: str = "error"  # "error" or "warning" (the run goes on and reports what it skipped)
    code: int | None = None
    inject: list[Callable[[], Any]] = field(default_factory=list)  # context managers around the run
    allowed_new: list[str] = field(default_factory=list)  # globs of files an error may leave (none by default)
    check: Callable[[Any], None] | None = None  # extra assertions on the CliResult


class WS:
    """A case's folder (`root`, snapshotted before and after the run) and the shared assets."""

    def __init__(self, root: Path, assets: Assets, monkeypatch: Any):
        self.root, self.a, self.mp = root, assets, monkeypatch
        self.finalizers: list[Callable[[], Any]] = []

    def p(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, data: str | bytes) -> Path:
        p = self.p(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p

    def copy(self, src: Path, rel: str) -> Path:
        dst = self.p(rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        return dst

    def cls_spec(self, rel: str = "spec.yaml", data: Path | None = None, **extra: Any) -> Path:
        return self.write(rel, self.a.cls_spec_text(data, **extra))

    def deny(self, rel: str = "", error: int = errno.EACCES) -> Callable[[], Any]:
        folder = self.p(rel) if rel else self.root
        folder.mkdir(parents=True, exist_ok=True)
        return lambda: deny_writes(self.mp, folder, error)

    def full(self, rel: str = "") -> Callable[[], Any]:
        return lambda: disk_full(self.mp, self.p(rel) if rel else self.root)


CASES: dict[str, tuple[str, Callable[[WS], Expect]]] = {}


def case(category: str):
    def register(fn: Callable[[WS], Expect]) -> Callable[[WS], Expect]:
        CASES[fn.__name__] = (category, fn)
        return fn

    return register


# -- specs and overrides ---------------------------------------------------------------------------------


@case("spec")
def spec_missing(w):
    return Expect(
        ["classification", "train", "-e", w.p("nope.yaml"), "-r", w.p("r")],
        r"spec file not found",
        [w.p("nope.yaml")],
        code=2,
    )


@case("spec")
def spec_is_a_folder(w):
    w.p("specdir").mkdir()
    return Expect(
        ["classification", "train", "-e", w.p("specdir"), "-r", w.p("r")],
        r"is a folder; expected a YAML spec file",
        [w.p("specdir")],
    )


@case("spec")
def spec_not_yaml(w):
    s = w.write("s.yaml", "train_config:\n  n_epochs: [1, 2\n")
    return Expect(["classification", "train", "-e", s, "-r", w.p("r")], r"s\.yaml:\d+: not valid YAML", [s])


@case("spec")
def spec_not_utf8(w):
    s = w.write("s.yaml", b"train_config:\n  # caf\xe9 latin-1 comment\n  n_epochs: 2\n")
    return Expect(["classification", "train", "-e", s, "-r", w.p("r")], r"s\.yaml:2: not UTF-8 text \(byte 0xe9", [s])


@case("spec")
def spec_duplicate_key(w):
    s = w.write("s.yaml", "train_config:\n  n_epochs: 2\n  batch_size_per_gpu: 4\n  n_epochs: 30\n")
    return Expect(
        ["classification", "train", "-e", s, "-r", w.p("r")],
        r"s\.yaml:4: train_config\.n_epochs: duplicate key \(first given at line 2\)",
        [s],
    )


@case("spec")
def spec_unknown_key(w):
    s = w.write("s.yaml", "train_config:\n  n_epoch: 2\n")
    return Expect(
        ["classification", "train", "-e", s, "-r", w.p("r")],
        r"s\.yaml:2: train_config\.n_epoch: unknown key \(did you mean 'n_epochs'\?\)",
        [s],
    )


@case("spec")
def spec_wrong_type(w):
    s = w.write("s.yaml", "train_config:\n  n_epochs: many\n")
    return Expect(
        ["classification", "train", "-e", s, "-r", w.p("r")], r"s\.yaml:2: train_config\.n_epochs: .*got 'many'", [s]
    )


@case("spec")
def spec_top_level_list(w):
    s = w.write("s.yaml", "- train_config\n")
    return Expect(
        ["classification", "train", "-e", s, "-r", w.p("r")], r"s\.yaml:1: expected a mapping of sections", [s]
    )


@case("spec")
def override_without_equals(w):
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", w.p("r"), "train_config.n_epochs"],
        r"override 'train_config\.n_epochs': expected key=value",
        ["train_config.n_epochs"],
    )


@case("spec")
def override_into_a_value(w):
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", w.p("r"), "train_config.n_epochs.x=1"],
        r"override 'train_config\.n_epochs\.x': 'n_epochs' is a value, not a section",
        ["n_epochs"],
    )


@case("spec")
def override_out_of_range(w):
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", w.p("r"), "train_config.n_epochs=0"],
        r"override 'train_config\.n_epochs=0': train_config\.n_epochs: Input should be greater than or equal to 1",
        ["n_epochs"],
    )


@case("spec")
def detection_spec_names_unknown_class(w):
    """cost_function_config.per_class names 'cars': the class 'red' would silently train on the defaults."""
    s = w.write(
        "s.yaml",
        w.a.det_spec_text(w.a.det_manifest, **{"cost_function_config.per_class": {"redd": {"class_weight": 2.0}}}),
    )
    return Expect(
        ["detection", "train", "-e", s, "-r", w.p("r")],
        r"cost_function_config\.per_class\.redd: 'redd' is not a training class \(did you mean 'red'\?\)",
        ["redd"],
    )


# -- command-line flags ----------------------------------------------------------------------------------


@case("flags")
def unknown_task(w):
    return Expect(
        ["clasification", "train"], r"unknown task 'clasification'; did you mean 'classification'", ["clasification"]
    )


@case("flags")
def train_without_spec(w):
    return Expect(
        ["classification", "train", "-r", w.p("r")],
        r"-e/--experiment_spec is required",
        ["-e/--experiment_spec"],
        code=2,
    )


@case("flags")
def train_without_results_dir(w):
    return Expect(
        ["classification", "train", "-e", w.cls_spec()], r"-r/--results_dir is required", ["-r/--results_dir"]
    )


@case("flags")
def gpu_index_absent(w):
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", w.p("r"), "--gpu_index", "5"],
        r"--gpu_index 5: MXNet sees 0 GPU\(s\); run with --gpus 0 for CPU",
        ["--gpu_index 5"],
    )


@case("flags")
def gpus_absent(w):
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", w.p("r"), "--gpus", "2"],
        r"--gpus 2 \(devices \[0, 1\]\) requested but MXNet sees 0 GPU",
        ["--gpus 2"],
    )


@case("flags")
def gpus_and_index_disagree(w):
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", w.p("r"), "--gpus", "1", "--gpu_index", "0", "1"],
        r"--gpus 1 but --gpu_index lists 2 devices",
        ["--gpus 1"],
    )


@case("flags")
def amp_outside_train(w):
    return Expect(
        ["classification", "inference", "-m", w.p("m.tlk"), "-d", w.p("x"), "-r", w.p("r"), "--use_amp"],
        r"--use_amp applies to train only",
        ["--use_amp"],
    )


@case("flags")
def choice_not_allowed(w):
    return Expect(
        ["classification", "export", "-m", w.p("m.tlk"), "--data_type", "int4"],
        r"--data_type: 'int4' is not one of fp32, fp16, int8",
        ["--data_type"],
    )


@case("flags")
def batch_size_zero(w):
    return Expect(
        ["classification", "inference", "-m", w.p("m.tlk"), "-d", w.p("x"), "-r", w.p("r"), "-b", "0"],
        r"--batch_size 0: expected a number >= 1",
        ["--batch_size"],
    )


@case("flags")
def max_batches_zero(w):
    """--max_batches 0 used to write one batch."""
    return Expect(
        ["classification", "calibration_tensorfile", "-e", w.cls_spec(), "-o", w.p("cal.h5"), "--max_batches", "0"],
        r"--max_batches 0: expected a number >= 1 \(or -1\)",
        ["--max_batches"],
    )


@case("flags")
def top_k_zero(w):
    return Expect(
        ["classification", "evaluate", "-e", w.cls_spec(), "-m", w.p("m.tlk"), "--top_k", "0"],
        r"--top_k 0: expected a number >= 1",
        ["--top_k"],
    )


@case("flags")
def static_batch_negative(w):
    return Expect(
        ["classification", "export", "-m", w.p("m.tlk"), "--static_batch_size", "-3"],
        r"--static_batch_size -3: expected a number >= 1 \(or -1\)",
        ["--static_batch_size"],
    )


@case("flags")
def pose_zero_shards(w):
    return Expect(
        ["pose", "dataset_convert", "-a", w.a.pose_coco, "-o", w.p("o/p"), "-s", "0"],
        r"--num_shards 0: expected a number >= 1",
        ["--num_shards"],
    )


# -- writing: unwritable or full locations ---------------------------------------------------------------


@case("write")
def results_dir_is_a_file(w):
    f = w.write("r", "I am a file")
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", f], r"-r/--results_dir .*/r: is a file, not a folder", [f]
    )


@case("write")
def results_dir_under_a_file(w):
    f = w.write("r", "I am a file")
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", f / "sub"],
        r"cannot create the folder: .*/r is a file, not a folder",
        [f / "sub"],
    )


@case("write")
def results_dir_under_readonly(w):
    spec = w.cls_spec()
    return Expect(
        ["classification", "train", "-e", spec, "-r", w.p("ro/r")],
        r"-r/--results_dir .*ro/r: cannot create the folder: permission denied",
        [w.p("ro/r")],
        inject=[w.deny("ro")],
    )


@case("write")
def results_dir_readonly_lock(w):
    spec = w.cls_spec()
    w.p("r").mkdir()
    return Expect(
        ["classification", "train", "-e", spec, "-r", w.p("r")],
        r"r/\.tlkit\.lock: cannot create the lock file: permission denied",
        [w.p("r/.tlkit.lock")],
        inject=[w.deny("r")],
    )


@case("write")
def export_into_readonly(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    return Expect(
        ["classification", "export", "-m", m, "-o", w.p("ro/m.onnx")],
        r"ro/m\.onnx: cannot write: permission denied",
        [w.p("ro/m.onnx")],
        inject=[w.deny("ro")],
    )


@case("write")
def export_onto_a_folder(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    w.p("out.onnx").mkdir()
    return Expect(
        ["classification", "export", "-m", m, "-o", w.p("out.onnx")],
        r"out\.onnx: cannot write: it is a folder, not a file",
        [w.p("out.onnx")],
    )


@case("write")
def export_disk_full_keeps_old_file(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    old = w.write("out/m.onnx", "previous export")
    return Expect(
        ["classification", "export", "-m", m, "-o", old],
        r"out/m\.onnx: cannot write: no space left on the device",
        [old],
        inject=[w.full("out")],
    )


@case("write")
def export_read_only_filesystem(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    return Expect(
        ["classification", "export", "-m", m, "-o", w.p("ro/m.onnx")],
        r"ro/m\.onnx: cannot write: read-only file system",
        [w.p("ro/m.onnx")],
        inject=[w.deny("ro", errno.EROFS)],
    )


@case("write")
def calibration_into_readonly(w):
    return Expect(
        ["classification", "calibration_tensorfile", "-e", w.cls_spec(), "-o", w.p("ro/cal.h5")],
        r"ro/cal\.h5: cannot write: permission denied",
        [w.p("ro/cal.h5")],
        inject=[w.deny("ro")],
    )


@case("write")
def prune_onto_its_input(w):
    """`prune -m m.tlk -o m.tlk` used to overwrite the original model."""
    m = w.copy(w.a.cls_model, "m.tlk")
    return Expect(["classification", "prune", "-m", m, "-o", m], r"-o .*m\.tlk: is the -m model itself", [m])


@case("write")
def prune_disk_full(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    return Expect(
        ["classification", "prune", "-m", m, "-o", w.p("out/p.tlk")],
        r"out/p\.tlk: cannot write: no space left on the device",
        [w.p("out/p.tlk")],
        inject=[w.full("out")],
        allowed_new=[],
    )


@case("write")
def inference_results_dir_readonly(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    img = _png(w.p("imgs/a.png"))
    return Expect(
        ["classification", "inference", "-m", m, "-i", img, "-r", w.p("ro/r")],
        r"ro/r: cannot create the folder: permission denied",
        [w.p("ro/r")],
        inject=[w.deny("ro")],
    )


@case("write")
def train_disk_full(w):
    """The disk fills at the first file the run writes (the resolved spec): nothing half-written is left."""
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", w.p("r")],
        r"r/(experiment_spec\.yaml|classmap\.json): cannot write: no space left",
        ["cannot write"],
        inject=[w.full("r")],
        allowed_new=[],
    )


@case("write")
def status_json_disk_full(w):
    """The disk is full when a resumed run appends to status.json: one line, and status.json as it was."""
    r = w.copy(w.a.cls_run, "r")
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", r],
        r"r/status\.json: cannot write: no space left on the device",
        [r / "status.json"],
        inject=[w.full("r/status.json")],
    )


@case("write")
def export_output_under_a_file(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    f = w.write("f", "a file")
    return Expect(
        ["classification", "export", "-m", m, "-o", f / "m.onnx"],
        r"f/m\.onnx: cannot write: .*/f is a file, not a folder",
        [f / "m.onnx"],
    )


@case("write")
def dataset_convert_into_readonly(w):
    return Expect(
        ["classification", "dataset_convert", "-i", w.a.cls_data / "train", "-o", w.p("ro/out")],
        r"ro/out/train/\w+: cannot create the folder: permission denied",
        [w.p("ro/out")],
        inject=[w.deny("ro")],
    )


@case("write")
def detection_records_into_readonly(w):
    """The RecordIO writer (C++) used to fail with an MXNet trace."""
    kitti = w.copy(w.a.kitti, "kitti")
    d = w.write("export.yaml", json.dumps({"kitti_config": {"root_directory_path": str(kitti)}}))
    return Expect(
        ["detection", "dataset_convert", "-d", d, "-o", w.p("ro/ds")],
        r"ro/ds-fold-000-of-002-shard-\d+-of-\d+\.rec: cannot write: permission denied",
        [w.p("ro")],
        inject=[w.deny("ro")],
    )


@case("write")
def pose_records_into_readonly(w):
    return Expect(
        ["pose", "dataset_convert", "-a", w.a.pose_coco, "-o", w.p("ro/p")],
        r"ro/p-train-fold-000-of-001-shard-00000-of-00001\.rec: cannot write: permission denied",
        [w.p("ro")],
        inject=[w.deny("ro")],
    )


# -- model files -----------------------------------------------------------------------------------------


@case("model")
def model_missing(w):
    return Expect(
        ["classification", "export", "-m", w.p("nope.tlk")], r"nope\.tlk: (model file )?not found", [w.p("nope.tlk")]
    )


@case("model")
def model_not_a_model(w):
    m = w.write("m.tlk", "just text")
    return Expect(["classification", "export", "-m", m], r"m\.tlk: not a tlkit model file", [m])


@case("model")
def model_truncated(w):
    data = w.a.cls_model.read_bytes()
    m = w.write("m.tlk", data[: len(data) // 2])
    return Expect(
        ["classification", "prune", "-m", m, "-o", w.p("p.tlk")],
        r"m\.tlk: not a tlkit model file \(\.tlk\) or corrupt",
        [m],
    )


@case("model")
def model_of_another_task(w):
    m = w.copy(w.a.det_model, "det.tlk")
    return Expect(
        ["classification", "export", "-m", m],
        r"det\.tlk: a 'detection' model; export it with `tlkit detection export`",
        [m],
    )


@case("model")
def export_an_onnx(w):
    m = w.write("m.onnx", "x")
    return Expect(["classification", "export", "-m", m], r"m\.onnx: already ONNX", [m])


@case("model")
def prune_threshold_above_one(w):
    """-pth 1.5 used to cut every layer to the minimum without a word."""
    m = w.copy(w.a.cls_model, "m.tlk")
    return Expect(
        ["classification", "prune", "-m", m, "-o", w.p("p.tlk"), "-pth", "1.5"],
        r"-pth 1\.5: normalized filter norms are at most 1",
        ["-pth 1.5"],
    )


@case("model")
def prune_threshold_negative(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    return Expect(
        ["classification", "prune", "-m", m, "-o", w.p("p.tlk"), "-pth", "-0.1"],
        r"--pruning_threshold -0\.1: expected a number >= 0",
        ["--pruning_threshold"],
    )


@case("model")
def prune_unknown_excluded_layer(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    return Expect(
        ["classification", "prune", "-m", m, "-o", w.p("p.tlk"), "-el", "no_such_layer"],
        r"no_such_layer",
        ["no_such_layer"],
    )


@case("model")
def prune_target_ratio_above_one(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    return Expect(
        ["classification", "prune", "-m", m, "-o", w.p("p.tlk"), "--target_ratio", "2"],
        r"--target_ratio 2: expected a number >= 0 and <= 1",
        ["--target_ratio"],
    )


# -- classification data ---------------------------------------------------------------------------------


@case("data")
def cls_train_data_missing(w):
    s = w.cls_spec(data=w.p("nowhere"))
    return Expect(
        ["classification", "train", "-e", s, "-r", w.p("r")],
        r"dataset_config\.train_dataset_path .*nowhere/train: directory not found",
        [w.p("nowhere/train")],
    )


@case("data")
def cls_empty_class_folder(w):
    d = w.copy(w.a.cls_data, "d")
    (d / "train" / "star").mkdir()
    return Expect(
        ["classification", "train", "-e", w.cls_spec(data=d), "-r", w.p("r")],
        r"train/star: class folder has no images",
        [d / "train" / "star"],
    )


@case("data")
def cls_classmap_bad_json(w):
    cm = w.write("cm.json", '{"a": 0,')
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", w.p("r"), "--classmap", cm],
        r"cm\.json:1: not valid JSON",
        [cm],
    )


@case("data")
def cls_classmap_gap(w):
    cm = w.write("cm.json", '{"circle": 0, "square": 2, "triangle": 3}')
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", w.p("r"), "--classmap", cm],
        r"cm\.json: class indices must be 0\.\.2 without gaps",
        [cm],
    )


@case("data")
def cls_evaluate_unknown_class_folder(w):
    d = w.copy(w.a.cls_data, "d")
    shutil.copytree(d / "val" / "circle", d / "val" / "hexagon")
    m = w.copy(w.a.cls_model, "m.tlk")
    s = w.cls_spec(data=d)
    return Expect(
        ["classification", "evaluate", "-e", s, "-m", m, "-r", w.p("r")],
        r"val: class folder 'hexagon' is not in the model's classes",
        ["hexagon"],
    )


@case("data")
def cls_convert_one_image_class(w):
    """A class with one image would be left out of the test split."""
    d = w.copy(w.a.cls_data / "train", "d")
    for p in sorted((d / "circle").iterdir())[1:]:
        p.unlink()
    return Expect(
        ["classification", "dataset_convert", "-i", d, "-o", w.p("out")],
        r"d/circle: 1 readable image; a class needs at least 2",
        [d / "circle"],
    )


@case("data")
def cls_convert_output_inside_input(w):
    d = w.copy(w.a.cls_data / "train", "d")
    return Expect(
        ["classification", "dataset_convert", "-i", d, "-o", d / "split"],
        r"-o .*: must not be inside the input dataset",
        [d / "split"],
    )


@case("data")
def cls_convert_bad_ratios(w):
    return Expect(
        ["classification", "dataset_convert", "-i", w.a.cls_data / "train", "-o", w.p("out"), "--ratios", "0.5,0.6"],
        r"--ratios '0\.5,0\.6': expected 2 or 3 non-negative fractions summing to 1",
        ["--ratios"],
    )


@case("data")
def cls_convert_all_unreadable_class(w):
    d = w.copy(w.a.cls_data / "train", "d")
    for p in (d / "circle").iterdir():
        p.write_text("not an image")
    return Expect(
        ["classification", "dataset_convert", "-i", d, "-o", w.p("out")],
        r"d/circle: none of the class's 4 image\(s\) can be decoded",
        [d / "circle"],
    )


@case("data")
def cls_convert_truncated_jpeg(w):
    """A truncated JPEG used to pass dataset_convert and fail only at training: now skipped and named."""
    d = w.copy(w.a.cls_data / "train", "d")
    bad = truncated_jpeg(d / "square" / "cut.jpg")

    def check(res):
        assert not list(w.p("out").rglob("cut.jpg")), "the truncated image was copied"
        assert sum(1 for _ in w.p("out").rglob("*.png")) == 12

    return Expect(
        ["classification", "dataset_convert", "-i", d, "-o", w.p("out")],
        r"warning: skipped 1 unreadable image\(s\): .*cut\.jpg \(image file is truncated",
        [bad],
        kind="warning",
        check=check,
    )


@case("data")
def cls_convert_text_named_jpg(w):
    d = w.copy(w.a.cls_data / "train", "d")
    bad = w.write("d/circle/notes.jpg", "shopping list")
    return Expect(
        ["classification", "dataset_convert", "-i", d, "-o", w.p("out")],
        r"skipped 1 unreadable image\(s\): .*notes\.jpg \(not an image",
        [bad],
        kind="warning",
        check=lambda res: not list(w.p("out").rglob("notes.jpg")) or pytest.fail("copied"),
    )


@case("data")
def cls_convert_class_missing_from_val(w):
    """Two images of a class: train and test get one each; val's lack of it is said, not silent."""
    d = w.copy(w.a.cls_data / "train", "d")
    for p in sorted((d / "circle").iterdir())[2:]:
        p.unlink()

    def check(res):
        assert len(list((w.p("out") / "test" / "circle").iterdir())) == 1

    return Expect(
        ["classification", "dataset_convert", "-i", d, "-o", w.p("out")],
        r"warning: too few images for the val split: no circle",
        ["circle"],
        kind="warning",
        check=check,
    )


@case("data")
def cls_inference_skips_unreadable(w):
    """Inference used to stop at the first unreadable image of a folder."""
    m = w.copy(w.a.cls_model, "m.tlk")
    for i in range(3):
        _png(w.p(f"imgs/{i}.png"), i)
    bad = truncated_jpeg(w.p("imgs/1b.jpg"))

    def check(res):
        rows = (w.p("r") / "result.csv").read_text().splitlines()
        assert len(rows) == 4 and not any("1b.jpg" in r for r in rows), rows

    return Expect(
        ["classification", "inference", "-m", m, "-d", w.p("imgs"), "-r", w.p("r")],
        r"warning: skipped 1 unreadable image\(s\): .*1b\.jpg",
        [bad],
        kind="warning",
        check=check,
    )


@case("data")
def cls_inference_strict(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    _png(w.p("imgs/0.png"))
    bad = truncated_jpeg(w.p("imgs/1.jpg"))
    return Expect(
        ["classification", "inference", "-m", m, "-d", w.p("imgs"), "-r", w.p("r"), "--strict"],
        r"1\.jpg: image file is truncated .*--strict stops at the first",
        [bad],
        allowed_new=[],
    )


@case("data")
def cls_inference_all_unreadable(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    bad = w.write("imgs/a.png", "text")
    return Expect(
        ["classification", "inference", "-m", m, "-d", w.p("imgs"), "-r", w.p("r")],
        r"none of the 1 image\(s\) could be read \(.*a\.png",
        [bad],
    )


@case("data")
def cls_inference_missing_input(w):
    m = w.copy(w.a.cls_model, "m.tlk")
    return Expect(
        ["classification", "inference", "-m", m, "-i", w.p("nope.jpg"), "-r", w.p("r")],
        r"nope\.jpg: no such file or folder",
        [w.p("nope.jpg")],
    )


# -- results dirs: re-runs -------------------------------------------------------------------------------


@case("results_dir")
def rerun_with_renamed_class(w):
    """A re-run on renamed classes used to resume with the labels shifted."""
    r = w.copy(w.a.cls_run, "r")
    d = w.copy(w.a.cls_data, "d")
    for split in ("train", "val"):
        (d / split / "circle").rename(d / split / "disc")
    return Expect(
        ["classification", "train", "-e", w.cls_spec(data=d), "-r", r],
        r"r: holds a run on classes \[circle, square, triangle\] .*"
        r"this run's classes are \[disc, square, triangle\].*--restart",
        [r],
    )


@case("results_dir")
def rerun_with_other_network(w):
    r = w.copy(w.a.cls_run, "r")
    return Expect(
        ["classification", "train", "-e", w.cls_spec(**{"model_config.arch": "resnet18"}), "-r", r],
        r"model_epoch_001\.tlk: parameter .* the checkpoint is from another network; .*--restart",
        ["model_epoch_001.tlk"],
    )


@case("results_dir")
def rerun_held_by_live_process(w):
    """Another live training holds the results dir (its lock file names a running pid)."""
    import subprocess
    import sys

    from tlkit.training.lock import LOCK_NAME

    r = w.copy(w.a.cls_run, "r")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(r / LOCK_NAME),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    (r / LOCK_NAME).write_text(
        json.dumps(
            {"pid": holder.pid, "host": __import__("socket").gethostname(), "command": "tlkit classification train"}
        )
    )

    w.finalizers.append(lambda: (holder.kill(), holder.wait()))
    return Expect(
        ["classification", "train", "-e", w.cls_spec(), "-r", r],
        rf"r: in use by another training \(pid {holder.pid}",
        [r, "wait for it"],
    )


# -- detection data --------------------------------------------------------------------------------------


def _det_records(w):
    w.copy(w.a.det_manifest.parent, "det")
    return w.p("det/ds.json")


@case("detection")
def det_truncated_shard(w):
    """A truncated RecordIO shard used to give an MXNet `Invalid RecordIO File` trace without the file name."""
    man = _det_records(w)
    rec = sorted(w.p("det").glob("*fold-001*.rec"))[0]
    rec.write_bytes(rec.read_bytes()[: rec.stat().st_size // 2])
    s = w.write("s.yaml", w.a.det_spec_text(man))
    return Expect(["detection", "train", "-e", s, "-r", w.p("r")], r"\.rec: (truncated|record \d+ is damaged)", [rec])


@case("detection")
def det_shard_missing(w):
    man = _det_records(w)
    rec = sorted(w.p("det").glob("*fold-001*.rec"))[0]
    rec.unlink()
    s = w.write("s.yaml", w.a.det_spec_text(man))
    return Expect(["detection", "train", "-e", s, "-r", w.p("r")], r"shard listed in the manifest is missing", [rec])


@case("detection")
def det_index_garbage(w):
    man = _det_records(w)
    idx = sorted(w.p("det").glob("*fold-001*.idx"))[0]
    idx.write_text("zero\tone\n")
    s = w.write("s.yaml", w.a.det_spec_text(man))
    return Expect(["detection", "train", "-e", s, "-r", w.p("r")], r"\.idx: not a RecordIO index", [idx])


@case("detection")
def det_manifest_not_json(w):
    man = w.write("ds.json", "{oops")
    s = w.write("s.yaml", w.a.det_spec_text(man))
    return Expect(["detection", "train", "-e", s, "-r", w.p("r")], r"ds\.json:1: not valid JSON", [man])


@case("detection")
def det_manifest_other_format(w):
    man = w.write("ds.json", json.dumps({"format": "something-else"}))
    s = w.write("s.yaml", w.a.det_spec_text(man))
    return Expect(
        ["detection", "train", "-e", s, "-r", w.p("r")], r"ds\.json: not a tlkit detection dataset manifest", [man]
    )


@case("detection")
def det_unmapped_classes_reported(w):
    """target_class_mapping without 'blue': TLT drops its objects; that used to happen without a word."""
    man = _det_records(w)
    s = w.write("s.yaml", w.a.det_spec_text(man, **{"dataset_config.target_class_mapping": {"red": "red"}}))
    return Expect(
        ["detection", "train", "-e", s, "-r", w.p("r")],
        r"warning: dataset_config\.target_class_mapping maps no target for blue \(\d+ objects\)",
        ["blue"],
        kind="warning",
    )


@case("detection")
def det_validation_fold_out_of_range(w):
    man = _det_records(w)
    s = w.write("s.yaml", w.a.det_spec_text(man, **{"dataset_config.validation_fold": 5}))
    return Expect(
        ["detection", "train", "-e", s, "-r", w.p("r")],
        r"dataset_config\.validation_fold 5: .*ds\.json has folds 0\.\.1",
        ["validation_fold"],
    )


@case("detection")
def det_kitti_bad_label_line(w):
    k = w.copy(w.a.kitti, "kitti")
    lbl = k / "labels" / "0003.txt"
    lbl.write_text("red 0.0 0 0.0 10 10 oops 40 0 0 0 0 0 0 0\n")
    d = w.write("export.yaml", json.dumps({"kitti_config": {"root_directory_path": str(k)}}))
    return Expect(["detection", "dataset_convert", "-d", d, "-o", w.p("out/ds")], r"0003\.txt:1: ", [lbl])


@case("detection")
def det_kitti_truncated_image(w):
    """A truncated PNG used to pass dataset_convert (only its header was read) and fail in training."""
    k = w.copy(w.a.kitti, "kitti")
    img = k / "images" / "0002.png"
    img.write_bytes(img.read_bytes()[:300])
    d = w.write("export.yaml", json.dumps({"kitti_config": {"root_directory_path": str(k)}}))
    return Expect(
        ["detection", "dataset_convert", "-d", d, "-o", w.p("out/ds")],
        r"1 unreadable or truncated images \(skipped\); e\.g\. .*0002\.png \(image file is truncated",
        [img],
        kind="warning",
        check=lambda res: "7 images" in res.out or pytest.fail(res.out),
    )


@case("detection")
def det_voc_bad_xml(w):
    voc = w.p("voc")
    (voc / "Annotations").mkdir(parents=True)
    _png(voc / "JPEGImages" / "a.png")
    x = w.write("voc/Annotations/a.xml", "<annotation><object>")
    d = w.write("export.yaml", json.dumps({"voc_config": {"root_directory_path": str(voc)}}))
    return Expect(["detection", "dataset_convert", "-d", d, "-o", w.p("out/ds")], r"a\.xml:1: not valid XML", [x])


@case("detection")
def det_coco_without_images(w):
    j = w.write("coco.json", json.dumps({"annotations": [], "categories": []}))
    d = w.write(
        "export.yaml", json.dumps({"coco_config": {"annotation_file": str(j), "image_directory_path": str(w.root)}})
    )
    return Expect(
        ["detection", "dataset_convert", "-d", d, "-o", w.p("out/ds")], r"coco\.json: expected a 'images' list", [j]
    )


@case("detection")
def det_coco_entry_without_id(w):
    j = w.write("coco.json", json.dumps({"images": [{"file_name": "a.png"}], "annotations": [], "categories": []}))
    d = w.write(
        "export.yaml", json.dumps({"coco_config": {"annotation_file": str(j), "image_directory_path": str(w.root)}})
    )
    return Expect(
        ["detection", "dataset_convert", "-d", d, "-o", w.p("out/ds")], r"coco\.json: images\[0\] has no 'id'", [j]
    )


@case("detection")
def det_export_spec_two_sources(w):
    d = w.write(
        "export.yaml",
        json.dumps({"kitti_config": {"root_directory_path": "a"}, "voc_config": {"root_directory_path": "b"}}),
    )
    return Expect(
        ["detection", "dataset_convert", "-d", d, "-o", w.p("out/ds")],
        r"exactly one of kitti_config, voc_config, coco_config",
        ["kitti_config"],
    )


@case("detection")
def det_predictions_without_scores(w):
    w.write("gt/0.txt", "car 0 0 0 1 1 20 20 0 0 0 0 0 0 0\n")
    p = w.write("pred/0.txt", "car 0 0 0 1 1 20 20 0 0 0 0 0 0 0\n")
    return Expect(
        ["detection", "evaluate", "--predictions", w.p("pred"), "--labels", w.p("gt")],
        r"no usable detection in 1 prediction file\(s\): 1 lines with 15 fields, no score \(skipped\)",
        [p],
    )


@case("detection")
def det_inference_skips_unreadable(w):
    m = w.copy(w.a.det_model, "det.tlk")
    _png(w.p("imgs/a.png"), 0, (64, 48))
    bad = truncated_jpeg(w.p("imgs/b.jpg"))

    def check(res):
        assert (w.p("r") / "labels" / "a.txt").is_file() and not (w.p("r") / "labels" / "b.txt").exists()

    return Expect(
        ["detection", "inference", "-m", m, "-d", w.p("imgs"), "-r", w.p("r")],
        r"warning: skipped 1 unreadable image\(s\): .*b\.jpg",
        [bad],
        kind="warning",
        check=check,
    )


@case("detection")
def det_inference_strict(w):
    m = w.copy(w.a.det_model, "det.tlk")
    bad = truncated_jpeg(w.p("imgs/b.jpg"))
    _png(w.p("imgs/c.png"), 0, (64, 48))
    return Expect(
        ["detection", "inference", "-m", m, "-d", w.p("imgs"), "-r", w.p("r"), "--strict"], r"b\.jpg: .*--strict", [bad]
    )


# -- pose data -------------------------------------------------------------------------------------------


def _pose_records(w):
    from tlkit_pose.coco import load_coco_keypoints
    from tlkit_pose.dataset_convert import convert

    convert(load_coco_keypoints(w.a.pose_coco), w.p("recs/p"))
    return w.p("recs/p-train-fold-000-of-001-shard-00000-of-00001.rec")


@case("pose")
def pose_truncated_shard(w):
    rec = _pose_records(w)
    rec.write_bytes(rec.read_bytes()[: rec.stat().st_size // 3])
    s = w.write("s.yaml", w.a.pose_spec_text(train_records=str(rec)))
    return Expect(["pose", "train", "-e", s, "-r", w.p("r")], r"\.rec: (truncated|record \d+ is damaged)", [rec])


@case("pose")
def pose_index_missing(w):
    rec = _pose_records(w)
    rec.with_suffix(".idx").unlink()
    s = w.write("s.yaml", w.a.pose_spec_text(train_records=str(rec)))
    return Expect(
        ["pose", "train", "-e", s, "-r", w.p("r")], r"\.idx: RecordIO index not found", [rec.with_suffix(".idx")]
    )


@case("pose")
def pose_records_glob_matches_nothing(w):
    s = w.write("s.yaml", w.a.pose_spec_text(train_records=str(w.p("none-*.rec"))))
    return Expect(
        ["pose", "train", "-e", s, "-r", w.p("r")],
        r"dataloader\.train_records .*: no \.rec files match",
        ["train_records"],
    )


@case("pose")
def pose_coco_not_json(w):
    j = w.write("kp.json", "[1, 2")
    return Expect(["pose", "dataset_convert", "-a", j, "-o", w.p("o/p")], r"kp\.json:1: not valid JSON", [j])


@case("pose")
def pose_coco_not_utf8(w):
    j = w.write("kp.json", b'{"images": [], "info": "\xff"}')
    return Expect(["pose", "dataset_convert", "-a", j, "-o", w.p("o/p")], r"kp\.json:1: not UTF-8 text", [j])


@case("pose")
def pose_wrong_image_root(w):
    return Expect(
        ["pose", "dataset_convert", "-a", w.a.pose_coco, "--image_root", w.p("nowhere"), "-o", w.p("o/p")],
        r"none of the 3 images could be used .*nowhere",
        [w.p("nowhere")],
    )


@case("pose")
def pose_convert_truncated_image(w):
    src = w.copy(w.a.pose_coco.parent, "coco")
    data = json.loads((src / w.a.pose_coco.name).read_text())
    img = src / data["images"][0]["file_name"]
    img.write_bytes(img.read_bytes()[:200])
    return Expect(
        ["pose", "dataset_convert", "-a", src / w.a.pose_coco.name, "-o", w.p("o/p")],
        r"skipped 1 image\(s\), unreadable: .*image file is truncated",
        [img],
        kind="warning",
    )


@case("pose")
def pose_train_reports_bad_annotations(w):
    """pose train used to drop bad annotations without saying so."""
    src = w.copy(w.a.pose_coco.parent, "coco")
    j = src / w.a.pose_coco.name
    data = json.loads(j.read_text())
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-3]  # 16 keypoints
    j.write_text(json.dumps(data))
    s = w.write("s.yaml", w.a.pose_spec_text(train_annotations=str(j)))
    return Expect(
        ["pose", "train", "-e", s, "-r", w.p("r"), "train_config.n_epochs=1"],
        r"warning: .*annotations\.json: label problem: 1 x keypoints is not a list",
        [j],
        kind="warning",
    )


@case("pose")
def pose_inference_skips_unreadable(w):
    m = w.copy(w.a.pose_model, "pose.tlk")
    _png(w.p("imgs/a.png"), 0, (64, 48))
    bad = truncated_jpeg(w.p("imgs/b.jpg"))

    def check(res):
        dets = json.loads((w.p("r") / "detections.json").read_text())
        assert all(d["file_name"].endswith("a.png") for d in dets)

    return Expect(
        ["pose", "inference", "-m", m, "-d", w.p("imgs"), "-r", w.p("r")],
        r"warning: skipped 1 unreadable image\(s\): .*b\.jpg",
        [bad],
        kind="warning",
        check=check,
    )


@case("pose")
def pose_inference_all_unreadable(w):
    m = w.copy(w.a.pose_model, "pose.tlk")
    bad = w.write("imgs/a.png", "text")
    return Expect(
        ["pose", "inference", "-m", m, "-d", w.p("imgs"), "-r", w.p("r")],
        r"none of the 1 image\(s\) could be read \(.*a\.png",
        [bad],
        allowed_new=[],
    )


# -- the runner ------------------------------------------------------------------------------------------


def test_fault_table_size():
    """The issue's bar: >= 60 distinct bad inputs and faults, across the three tasks."""
    assert len(CASES) >= 60, len(CASES)
    by_cat: dict[str, int] = {}
    for cat, _ in CASES.values():
        by_cat[cat] = by_cat.get(cat, 0) + 1
    assert {"spec", "flags", "write", "model", "data", "results_dir", "detection", "pose"} <= set(by_cat), by_cat


@pytest.mark.parametrize("name", list(CASES))
def test_fault(name, capsys, tmp_path, monkeypatch, assets):
    import contextlib

    _, build = CASES[name]
    ws = WS(tmp_path / "ws", assets, monkeypatch)
    ws.root.mkdir()
    try:
        exp = build(ws)
        before = snapshot(ws.root)
        with contextlib.ExitStack() as stack:
            for inject in exp.inject:
                stack.enter_context(inject())
            res = run_cli(capsys, *exp.args)
        after = snapshot(ws.root)
        if exp.kind == "error":
            assert_clean_failure(res, exp.match, exp.names, exp.code)
            assert_unchanged(before, after, exp.allowed_new)
        else:
            assert_reported(res, exp.match, exp.names)
            assert_unchanged(before, after, allowed_new=["*"])
        if exp.check is not None:
            exp.check(res)
    finally:
        for fin in ws.finalizers:
            fin()


# -- two trainings in one results dir ----------------------------------------------------------------------


def test_second_training_is_refused_while_the_first_completes(tmp_path, capsys, assets):
    """The first run (a real `tlkit` process) is frozen (SIGSTOP) as soon as it holds the results dir; the second
    is refused with one line and changes no file (no spec rewrite, no status.json line, the first's temp files
    kept); the first then completes normally."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tlkit.training import StatusLogger
    from tlkit.training.lock import LOCK_NAME, read_holder

    spec = tmp_path / "spec.yaml"
    spec.write_text(assets.cls_spec_text(**{"train_config.n_epochs": 2}))
    r = tmp_path / "r"
    first = subprocess.Popen(
        [sys.executable, "-m", "tlkit", "classification", "train", "-e", str(spec), "-r", str(r)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lock = r / LOCK_NAME
    deadline = time.time() + 120
    while read_holder(lock).get("pid") != first.pid:
        assert first.poll() is None and time.time() < deadline, first.stdout.read()[-3000:]
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        time.sleep(0.2)  # whatever the first was writing stays as it is while it is stopped
        before = snapshot(r)
        res = run_cli(capsys, "classification", "train", "-e", spec, "-r", r)
        after = snapshot(r)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert_clean_failure(
        res, rf"{r}: in use by another training \(pid {first.pid}, started .*\); wait for it to finish", [lock]
    )
    assert_unchanged(before, after)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    statuses = [s["status"] for s in StatusLogger(r).read()]
    assert statuses.count("STARTED") == 1 and statuses[-1] == "SUCCESS", statuses
    assert (r / "weights" / "model.tlk").is_file() and (r / "weights" / "model_epoch_002.tlk").is_file()
    assert not lock.exists()


def test_sigterm_during_cli_training(tmp_path, capsys, monkeypatch, assets):
    """SIGTERM (docker stop) mid-training: exit 143, 'terminated (SIGTERM)', FAILURE in status.json (it used to
    stay at RUNNING) and the lock released."""
    import os
    import signal

    from tlkit.training import StatusLogger, engine
    from tlkit.training.lock import LOCK_NAME

    real = engine._Engine._log_epoch

    def log_then_sigterm(self, *args, **kwargs):
        real(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(engine._Engine, "_log_epoch", log_then_sigterm)
    spec = tmp_path / "spec.yaml"
    spec.write_text(assets.cls_spec_text(**{"train_config.n_epochs": 3}))
    res = run_cli(capsys, "classification", "train", "-e", spec, "-r", tmp_path / "r")
    assert res.code == 143 and res.error_lines == ["terminated (SIGTERM)"], res
    last = StatusLogger(tmp_path / "r").read()[-1]
    assert (last["status"], last["message"]) == ("FAILURE", "Training interrupted (SIGTERM)")
    assert not (tmp_path / "r" / LOCK_NAME).exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone with the run


def test_restart_trains_anew_and_keeps_the_old_run(tmp_path, capsys, assets):
    """The refused re-run on renamed classes, with --restart: it trains from scratch; the old run is moved aside."""
    r = tmp_path / "r"
    shutil.copytree(assets.cls_run, r)
    old_model = (r / "weights" / "model.tlk").read_bytes()
    d = tmp_path / "d"
    shutil.copytree(assets.cls_data, d)
    for split in ("train", "val"):
        (d / split / "circle").rename(d / split / "disc")
    spec = tmp_path / "spec.yaml"
    spec.write_text(assets.cls_spec_text(d))
    res = run_cli(capsys, "classification", "train", "-e", spec, "-r", r, "--restart")
    assert res.code == 0, res
    (old,) = (r / "previous_runs").iterdir()
    assert f"--restart: the previous run's files moved to {old}" in res.out.replace("\n", "")
    assert (old / "weights" / "model.tlk").read_bytes() == old_model
    assert json.loads((old / "classmap.json").read_text()) == {"circle": 0, "square": 1, "triangle": 2}
    assert json.loads((r / "classmap.json").read_text()) == {"disc": 0, "square": 1, "triangle": 2}
    assert "Resuming" not in res.out
