"""DeepStream secondary-GIE configs, the deepstream-app cascade config, the Python cascade's crops (checked
against what the written nvinfer config makes DeepStream do), Triton repos through the CLI, file modes.

Config keys are checked against the key strings of DeepStream's own parsers (fixtures/deepstream_keys.json,
source noted there); config.pbtxt with Triton's model_config proto (tritonclient)."""

import json
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from tlkit.errors import SpecError
from tlkit.export.cascade import SecondaryClassifier, nvinfer_object_rect
from tlkit.export.deepstream_app import write_deepstream_app
from tlkit.export.deploy import SecondaryGie, write_deepstream_config
from tlkit.export.onnx_export import export_onnx
from tlkit.testing.export import read_deepstream_config

KEYS = json.loads((Path(__file__).parent / "fixtures" / "deepstream_keys.json").read_text())
CLASSES = ["rbc", "wbc", "platelet"]
DET_CLASSES = ["cell", "debris"]


def tiny_classifier(tmp_path, mode="caffe"):
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1), nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Dense(len(CLASSES)))
    net.initialize(mx.init.Xavier())
    meta = {
        "task": "classification",
        "arch": "tiny",
        "classes": CLASSES,
        "input_shape": [3, 24, 20],
        "preprocessing": {"mode": mode, "center_crop": True},
    }
    return export_onnx(net, tmp_path / "cls.onnx", meta=meta)


def tiny_detector(tmp_path):
    mx.random.seed(1)

    class Det(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            self.trunk, self.cov, self.bbox = nn.Conv2D(4, 3, strides=4, padding=1), nn.Conv2D(2, 1), nn.Conv2D(8, 1)

        def hybrid_forward(self, F, x):
            f = F.relu(self.trunk(x))
            return F.sigmoid(self.cov(f)), self.bbox(f)

    net = Det()
    net.initialize(mx.init.Xavier())
    meta = {
        "task": "detection",
        "classes": DET_CLASSES,
        "input_shape": [3, 32, 48],
        "preprocessing": {"mode": "tf"},
        "output_names": ["output_cov", "output_bbox"],
        "deepstream": {"network_type": 0, "properties": {"cluster-mode": 2}, "class_attrs_all": {"topk": 20}},
    }
    return export_onnx(net, tmp_path / "det.onnx", meta=meta)


def assert_nvinfer_keys(path):
    cp = read_deepstream_config(path)
    for section in cp.sections():
        allowed = KEYS["nvinfer"]["property" if section == "property" else "class-attrs"]
        assert section == "property" or section.startswith("class-attrs-"), section
        unknown = set(cp[section]) - set(allowed)
        assert not unknown, f"{path.name} [{section}]: keys nvinfer does not read: {sorted(unknown)}"
    return cp


def test_secondary_classifier_config(tmp_path):
    onnx_path = tiny_classifier(tmp_path)
    sgie = SecondaryGie(
        operate_on_gie_id=1,
        operate_on_class_ids=(0, 1),
        gie_unique_id=3,
        input_object_min_width=24,
        input_object_min_height=20,
        classifier_async_mode=True,
    )
    cfg = write_deepstream_config(onnx_path, None, tmp_path / "ds", secondary=sgie, classifier_threshold=0.6)
    p = assert_nvinfer_keys(cfg)["property"]
    assert p["process-mode"] == "2" and p["network-type"] == "1" and p["gie-unique-id"] == "3"
    assert p["operate-on-gie-id"] == "1" and p["operate-on-class-ids"] == "0;1"
    assert p["input-object-min-width"] == "24" and p["input-object-min-height"] == "20"
    assert p["classifier-async-mode"] == "1" and float(p["classifier-threshold"]) == 0.6
    assert p["output-blob-names"] == "output" and p["scaling-filter"] == "1" and p["maintain-aspect-ratio"] == "0"
    text = cfg.read_text()
    assert "complete: runs as written" in text.splitlines()[0]
    assert "center crop" in text  # the model was validated with one; nvinfer cannot do it
    primary = write_deepstream_config(onnx_path, None, tmp_path / "p")
    assert read_deepstream_config(primary)["property"]["process-mode"] == "1"
    with pytest.raises(SpecError, match="network-type 0, not 1"):
        write_deepstream_config(tiny_detector(tmp_path), None, tmp_path / "x", secondary=sgie)


def test_custom_parser_config_is_not_called_complete(tmp_path):
    det = tiny_detector(tmp_path)
    from tlkit.export.onnx_export import read_onnx_metadata

    meta = read_onnx_metadata(det)
    stock = {
        **meta,
        "deepstream": {
            "network_type": 0,
            "properties": {
                "parse-bbox-func-name": "NvDsInferParseCustomTfSSD",
                "custom-lib-path": "/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so",
            },
        },
    }
    assert "complete: runs as written" in write_deepstream_config(det, stock, tmp_path / "a").read_text()
    custom = {
        **meta,
        "deepstream": {
            "network_type": 0,
            "properties": {
                "parse-bbox-func-name": "NvDsInferParseTlkitEfficientNMS",
                "custom-lib-path": "libnvds_tlkit_parsers.so",
            },
        },
    }
    first = write_deepstream_config(det, custom, tmp_path / "b").read_text().splitlines()[0]
    assert "NOT complete" in first and "does not ship" in first and "libnvds_tlkit_parsers.so" in first


def test_deepstream_app_cascade_config(tmp_path):
    det, cls = tiny_detector(tmp_path), tiny_classifier(tmp_path)
    out = tmp_path / "app"
    paths = write_deepstream_app(
        det, cls, out, secondary_gie=SecondaryGie(operate_on_class_ids=(0,)), classifier_threshold=0.7
    )
    app = read_deepstream_config(paths["app"])
    groups = {"source0": "source", "sink0": "sink", "secondary-gie0": "primary-gie"}
    assert {"application", "source0", "streammux", "primary-gie", "tracker", "secondary-gie0", "osd", "sink0"} <= set(
        app
    )
    for section in app.sections():
        allowed = KEYS["deepstream_app"][groups.get(section, section)]
        unknown = set(app[section]) - set(allowed)
        assert not unknown, f"[{section}]: keys deepstream-app does not read: {sorted(unknown)}"
    assert app["primary-gie"]["gie-unique-id"] == "1" and app["secondary-gie0"]["operate-on-gie-id"] == "1"
    assert app["secondary-gie0"]["gie-unique-id"] == "2" and app["secondary-gie0"]["operate-on-class-ids"] == "0"
    assert app["tracker"]["ll-lib-file"].endswith("libnvds_nvmultiobjecttracker.so")
    assert app["sink0"]["type"] == "3" and app["sink0"]["output-file"] == "cascade_out.mp4"
    for key in ("primary-gie", "secondary-gie0"):
        nvinfer = out / app[key]["config-file"]
        cp = assert_nvinfer_keys(nvinfer)
        p = cp["property"]
        assert (out / p["onnx-file"]).resolve() == (det if key == "primary-gie" else cls).resolve()
        assert (out / p["labelfile-path"]).is_file()
    s = read_deepstream_config(paths["secondary"])["property"]
    assert s["process-mode"] == "2" and float(s["classifier-threshold"]) == 0.7 and s["classifier-async-mode"] == "1"
    assert (out / "labels_secondary.txt").read_text() == "rbc;wbc;platelet\n"
    assert (out / "labels_primary.txt").read_text() == "cell\ndebris\n"
    # without a tracker the classifier must attach results synchronously (async mode needs tracker ids)
    paths = write_deepstream_app(det, cls, tmp_path / "notrack", tracker=False, sink="fake")
    assert (
        "tracker" not in read_deepstream_config(paths["app"])
        and read_deepstream_config(paths["secondary"])["property"]["classifier-async-mode"] == "0"
    )
    with pytest.raises(SpecError, match="must be a detector"):
        write_deepstream_app(cls, cls, tmp_path / "bad")


def nvinfer_input(frame, box, cfg_path):
    """What nvinfer feeds the secondary network for one object, computed from the config file's values alone:
    integer rect with left/top rounded up and width/height down to even, bilinear scale to infer-dims (no aspect
    ratio kept), y = net-scale-factor * (x - offsets[c]) in model-color-format order."""
    import cv2

    p = read_deepstream_config(cfg_path)["property"]
    assert p["maintain-aspect-ratio"] == "0" and p["scaling-filter"] == "1"
    c, h, w = (int(v) for v in p["infer-dims"].split(";"))
    x1, y1, x2, y2 = box
    left, top = int(x1) + (int(x1) & 1), int(y1) + (int(y1) & 1)
    width, height = int(x2 - x1) & ~1, int(y2 - y1) & ~1
    crop = frame[top : top + height, left : left + width]
    # NvBufSurfTransform scales 8-bit pixels into an 8-bit surface; normalization comes after
    scaled = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    if p["model-color-format"] == "1":
        scaled = scaled[:, :, ::-1]
    offsets = np.array([float(v) for v in p["offsets"].split(";")], np.float32)
    return (float(p["net-scale-factor"]) * (scaled - offsets)).transpose(2, 0, 1)


@pytest.mark.parametrize("mode", ["caffe", "tf"])
def test_python_cascade_crops_as_the_deepstream_config_says(tmp_path, mode):
    cls = tiny_classifier(tmp_path, mode)
    cfg = write_deepstream_config(cls, None, tmp_path / "ds", secondary=SecondaryGie())
    frame = np.random.RandomState(0).randint(0, 256, (120, 160, 3)).astype(np.uint8)
    boxes = [(10.7, 21.2, 60.9, 80.4), (101.0, 5.5, 140.2, 31.0), (3.0, 3.0, 12.0, 40.0)]  # the last: 9 px wide
    sc = SecondaryClassifier(cls, min_width=16, min_height=16)
    x, kept, rects = sc.inputs(frame, boxes)
    assert kept == [0, 1] and rects[0] == (10, 22, 50, 58)  # int() then left/top up, width/height down to even
    for row, i in zip(x, kept):
        np.testing.assert_allclose(row, nvinfer_input(frame, boxes[i], cfg), rtol=1e-5, atol=1e-4)
    results = sc.classify(frame, boxes)
    assert results[2].label is None and results[2].probability is None
    assert all(r.probability is not None and 0 < r.probability <= 1 for r in results[:2])
    picky = SecondaryClassifier(cls, threshold=1.01, operate_on_class_ids=(1,))
    res = picky.classify(frame, boxes, class_ids=[0, 1, 1])
    assert res[0].probability is None and res[1].probability is not None and res[1].label is None  # below threshold


def test_margin_widens_and_clips():
    assert nvinfer_object_rect((10, 10, 30, 50), 100, 100) == (10, 10, 20, 40)
    assert nvinfer_object_rect((10, 10, 30, 50), 100, 100, margin=0.25) == (6, 0, 30, 60)
    assert nvinfer_object_rect((90, 90, 130, 99), 100, 100) == (90, 90, 8, 8)
