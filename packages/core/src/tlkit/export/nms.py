"""NMS in the exported graph, for detectors whose network gives decoded boxes before NMS.

Input (what a model declares with meta["export_nms"]): graph outputs `ids` (B, M, 1) class id per row (-1 none),
`scores` (B, M, 1) and `bboxes` (B, M, 4) x1, y1, x2, y2 in network-input pixels (GluonCV SSD / YOLOv3 decoding:
one row per anchor and class). Appended: boxes clipped to the input, rows below `min_height` dropped, per class
the `top_k` best kept, ONNX NonMaxSuppression per class (IoU > `iou_threshold` suppressed, score >
`score_threshold`), then the `keep_top_k` best of all classes, padded to a fixed size:

    num_detections     (B, 1)     float32   detections in the rows below (the rest is padding)
    detection_boxes    (B, K, 4)  float32   y1, x1, y2, x2 normalized to 0..1 (padding 0)
    detection_scores   (B, K)     float32   best first (padding 0)
    detection_classes  (B, K)     float32   class id (padding -1)

This is the TensorFlow Object Detection API layout, which DeepStream's own `NvDsInferParseCustomTfSSD` in the
stock `libnvds_infercustomparser.so` reads (outputs found by these names, all float; it applies the per-class
pre-cluster-threshold), so the nvinfer config needs no custom library. onnxruntime runs it as is; TensorRT's
ONNX parser maps NonMaxSuppression to its NMS layer. The padding is built with ScatterND + TopK over a fixed
size, so every output shape is static but the batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkit.errors import SpecError

INPUTS = ("ids", "scores", "bboxes")
OUTPUTS = ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
STOCK_PARSER = "NvDsInferParseCustomTfSSD"
STOCK_PARSER_LIB = "/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so"


def append_nms(model: Any, params: dict[str, Any], input_shape: tuple[int, ...]) -> Any:
    """`model` (onnx ModelProto with outputs ids, scores, bboxes) with NMS appended (see the module docstring).

    `params`: iou_threshold, score_threshold, top_k (per class, before NMS), keep_top_k (per image),
    min_height (pixels; rows this tall or less are dropped)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    outs = {o.name: o for o in graph.output}
    if not all(n in outs for n in INPUTS):
        raise SpecError(f"NMS export needs graph outputs {list(INPUTS)}; the model has {list(outs)}")
    dims = [d.dim_value for d in outs["ids"].type.tensor_type.shape.dim]
    m = dims[1] if len(dims) == 3 and dims[1] > 0 else 0
    n_classes = int(params["num_classes"])
    if not m:
        raise SpecError("NMS export needs a fixed number of rows M in ids (B, M, 1)")
    _, h, w = (int(v) for v in input_shape)
    top_k = max(1, min(int(params.get("top_k", m)), m))
    keep = max(1, min(int(params.get("keep_top_k", 100)), n_classes * m))
    nodes, inits = [], []

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), f"nms/{name}"))
        return f"nms/{name}"

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = f"nms/{name}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def node2(op: str, inputs: list[str], names: tuple[str, str], **attrs: Any) -> tuple[str, str]:
        a, b = f"nms/{names[0]}", f"nms/{names[1]}"
        nodes.append(helper.make_node(op, inputs, [a, b], name=a, **attrs))
        return a, b

    # clip to the input, as tlkit's own post-processing does before NMS
    lo = const("lo", [0, 0, 0, 0])
    hi = const("hi", [w, h, w, h])
    boxes = node("Min", [node("Max", ["bboxes", lo], "clip_lo"), hi], "boxes")  # (B, M, 4)
    ids = node("Squeeze", ["ids", const("ax2", [2], np.int64)], "ids")  # (B, M)
    score = node("Squeeze", ["scores", const("ax2b", [2], np.int64)], "score")
    y1 = node("Gather", [boxes, const("i1", 1, np.int64)], "y1", axis=2)
    y2 = node("Gather", [boxes, const("i3", 3, np.int64)], "y2", axis=2)
    tall = node(
        "Greater", [node("Sub", [y2, y1], "height"), const("min_h", float(params.get("min_height", 0.0)))], "tall"
    )
    score = node("Where", [tall, score, const("zero", 0.0)], "score_tall")
    # (B, C, M): the row's score in its own class, 0 elsewhere
    cls_range = const("classes", np.arange(n_classes, dtype=np.float32).reshape(1, n_classes, 1))
    ids_f = node(
        "Cast", [node("Unsqueeze", [ids, const("ax1", [1], np.int64)], "ids_c")], "ids_f", to=TensorProto.FLOAT
    )
    in_class = node("Equal", [ids_f, cls_range], "in_class")
    per_class = node(
        "Where",
        [in_class, node("Unsqueeze", [score, const("ax1b", [1], np.int64)], "score_c"), const("zero_b", 0.0)],
        "per_class",
    )
    if top_k < m:  # each class's top_k best rows only (ties at the k-th score may keep a few more)
        kth_vals, _ = node2("TopK", [per_class, const("top_k", [top_k], np.int64)], ("kth_vals", "kth_idx"), axis=2)
        kth = node("Gather", [kth_vals, const("last", [top_k - 1], np.int64)], "kth", axis=2)
        per_class = node(
            "Where",
            [node("GreaterOrEqual", [per_class, kth], "in_top"), per_class, const("zero_c", 0.0)],
            "per_class_top",
        )
    # ONNX keeps scores strictly above the threshold; tlkit keeps them at or above it
    thr = float(np.nextafter(np.float32(params.get("score_threshold", 0.0)), np.float32(-1)))
    selected = node(
        "NonMaxSuppression",
        [
            boxes,
            per_class,
            const("max_out", [top_k], np.int64),
            const("iou", [float(params["iou_threshold"])]),
            const("score_thr", [thr]),
        ],
        "selected",
    )  # (S, 3): batch, class, row
    n_sel = node(
        "Slice",
        [node("Shape", [selected], "sel_shape"), const("s0", [0], np.int64), const("s1", [1], np.int64)],
        "n_sel",
    )
    ones = node("ConstantOfShape", [n_sel], "ones", value=numpy_helper.from_array(np.array([1.0], np.float32)))
    kept = node("ScatterND", [node("Mul", [per_class, const("zero_d", 0.0)], "zeros"), selected, ones], "kept")
    flat = node(
        "Where", [node("Greater", [kept, const("half", 0.5)], "is_kept"), per_class, const("minus", -1.0)], "masked"
    )
    flat = node("Reshape", [flat, const("flat_shape", [0, -1], np.int64)], "flat")  # (B, C*M)
    values, index = node2("TopK", [flat, const("keep", [keep], np.int64)], ("values", "index"), axis=1)
    valid = node("Greater", [values, const("minus_half", -0.5)], "valid")
    cls = node("Div", [index, const("m", m, np.int64)], "cls")
    row = node("Mod", [index, const("m2", m, np.int64)], "row")
    row4 = node(
        "Expand",
        [node("Unsqueeze", [row, const("ax2c", [2], np.int64)], "row_u"), const("expand4", [1, 1, 4], np.int64)],
        "row4",
    )
    picked = node("GatherElements", [boxes, row4], "picked", axis=1)  # (B, K, 4) x1 y1 x2 y2
    yxyx = node("Gather", [picked, const("order", [1, 0, 3, 2], np.int64)], "yxyx", axis=2)
    norm = node("Div", [yxyx, const("size", [h, w, h, w])], "norm")
    valid3 = node("Unsqueeze", [valid, const("ax2d", [2], np.int64)], "valid3")
    nodes.append(
        helper.make_node("Where", [valid3, norm, const("zero_e", 0.0)], ["detection_boxes"], name="nms/boxes_out")
    )
    nodes.append(
        helper.make_node("Where", [valid, values, const("zero_f", 0.0)], ["detection_scores"], name="nms/scores_out")
    )
    nodes.append(
        helper.make_node(
            "Where",
            [valid, node("Cast", [cls], "cls_f", to=TensorProto.FLOAT), const("minus_b", -1.0)],
            ["detection_classes"],
            name="nms/classes_out",
        )
    )
    nodes.append(
        helper.make_node(
            "ReduceSum",
            [node("Cast", [valid], "valid_f", to=TensorProto.FLOAT), const("ax1c", [1], np.int64)],
            ["num_detections"],
            name="nms/count",
            keepdims=1,
        )
    )
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    del graph.output[:]
    f = TensorProto.FLOAT
    graph.output.extend(
        [
            helper.make_tensor_value_info("num_detections", f, ["batch", 1]),
            helper.make_tensor_value_info("detection_boxes", f, ["batch", keep, 4]),
            helper.make_tensor_value_info("detection_scores", f, ["batch", keep]),
            helper.make_tensor_value_info("detection_classes", f, ["batch", keep]),
        ]
    )
    return model


def deepstream_meta(
    params: dict[str, Any], classes: list[str], per_class_threshold: dict[str, float]
) -> dict[str, Any]:
    """meta["deepstream"] of an NMS export: DeepStream's stock TF-SSD parser, no clustering (NMS is done)."""
    return {
        "network_type": 0,
        "properties": {"parse-bbox-func-name": STOCK_PARSER, "custom-lib-path": STOCK_PARSER_LIB, "cluster-mode": 4},
        "class_attrs_all": {
            "pre-cluster-threshold": float(params.get("score_threshold", 0.0)),
            "topk": int(params.get("keep_top_k", 100)),
        },
        "class_attrs": {
            str(i): {"pre-cluster-threshold": float(per_class_threshold[c])}
            for i, c in enumerate(classes)
            if c in per_class_threshold
        },
        "notes": [
            f"NMS is in the graph (IoU {params['iou_threshold']}); {STOCK_PARSER} reads its "
            "num_detections / detection_boxes / detection_scores / detection_classes outputs."
        ]
        + (
            ["The spec gives classes different NMS IoU thresholds; the graph uses the first class's."]
            if params.get("per_class_iou_differs")
            else []
        ),
    }
