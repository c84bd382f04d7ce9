"""Pose post-processing time per image vs number of people, and ground-truth target throughput.

Inputs are the oracle's maps (ground truth rendered at stride 8 and upsampled x8 as the inferencer does), so
every person is found: the timings are those of a well-trained model's outputs. Image 384x640.
Results: benchmarks/results/pose.json.
"""

import numpy as np
import pytest

from tlkit_pose.postprocess import decode, upsample
from tlkit_pose.skeleton import coco_to_parts
from tlkit_pose.synthetic import random_pose
from tlkit_pose.targets import render_targets

H, W, STRIDE = 384, 640, 8


def _people(n: int, seed: int = 0, hw=(H, W)) -> np.ndarray:
    """n people on a grid of cells (no overlaps), COCO (n, 17, 3)."""
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(n * hw[1] / hw[0])))
    rows = int(np.ceil(n / cols))
    ch, cw = hw[0] / rows, hw[1] / cols
    out = np.zeros((n, 17, 3))
    for i in range(n):
        r, c = divmod(i, cols)
        size = ch * 0.8
        kp = random_pose(rng) * size
        out[i, :, :2] = kp + [c * cw + cw / 2, r * ch + ch * 0.08]
        out[i, :, 2] = 2
    return out


def _maps(n: int):
    hm, paf = render_targets(coco_to_parts(_people(n)), (H, W), STRIDE)
    return hm, paf


@pytest.mark.parametrize("people", [1, 5, 20])
def test_postprocess_per_image(benchmark, people):
    hm, paf = _maps(people)
    hm_up, paf_up = upsample(hm, STRIDE, (H, W)), upsample(paf, STRIDE, (H, W))
    found = benchmark.pedantic(decode, args=(hm_up, paf_up), rounds=10, warmup_rounds=1)
    assert len(found) == people
    benchmark.extra_info.update(people=people, image=f"{H}x{W}", stage="decode (peaks, limbs, grouping)")


@pytest.mark.parametrize("people", [1, 20])
def test_upsample_and_postprocess_per_image(benchmark, people):
    hm, paf = _maps(people)

    def run():
        return decode(upsample(hm, STRIDE, (H, W)), upsample(paf, STRIDE, (H, W)))

    found = benchmark.pedantic(run, rounds=10, warmup_rounds=1)
    assert len(found) == people
    benchmark.extra_info.update(people=people, image=f"{H}x{W}", stage="x8 bicubic upsample + decode")


@pytest.mark.parametrize("size,people", [((256, 256), 3), ((368, 368), 5), ((384, 640), 20)])
def test_target_generation_throughput(benchmark, size, people):
    parts = coco_to_parts(_people(people, hw=size))
    hm, paf = benchmark.pedantic(render_targets, args=(parts, size, STRIDE), rounds=30, warmup_rounds=2)
    assert hm.shape == (size[0] // 8, size[1] // 8, 19) and paf.shape[2] == 38
    benchmark.extra_info.update(people=people, input=f"{size[0]}x{size[1]}", stride=STRIDE)


# -- BodyPoseNet inference FPS (onnxruntime, CPU), unpruned vs pruned --------------------------------------
# The DeepStream input size 288x384, batch 1, the TLT-like model: VGG-19 through conv4_4 (backbone_blocks 5),
# 3 stages of 128 channels. Weights are random (speed does not depend on them); "pruned" keeps 30 % of the
# parameters (core pruner, heads excluded), roughly what TLT's -pth 0.05..0.2 leaves on a trained model.

BPNET = {"arch": "vgg19", "backbone_blocks": 5, "stages": 3, "stage_channels": 128}
BPNET_INPUT = (3, 288, 384)


@pytest.fixture(scope="module")
def bpnet_onnx(tmp_path_factory):
    import mxnet as mx

    from tlkit.export.onnx_export import export_onnx
    from tlkit.model_io import save_net
    from tlkit.pruning.command import prune_model_file
    from tlkit_pose.model import build_net, head_nodes, preprocessing

    tmp = tmp_path_factory.mktemp("bpnet")
    net = build_net(BPNET)
    net.initialize(mx.init.Xavier())
    meta = {
        "task": "pose",
        "arch": "vgg19",
        "input_shape": list(BPNET_INPUT),
        "build": BPNET,
        "preprocessing": preprocessing(),
        "output_names": ["heatmap_out", "paf_out"],
        "prune_exclude": head_nodes(3),
    }
    tlk = save_net(tmp / "bpnet.tlk", net, meta)
    report = prune_model_file(tlk, tmp / "bpnet_pruned.tlk", target_ratio=0.3)
    return {
        "unpruned": (export_onnx(tlk, tmp / "bpnet.onnx"), report.params_before),
        "pruned": (export_onnx(tmp / "bpnet_pruned.tlk", tmp / "bpnet_pruned.onnx"), report.params_after),
    }


@pytest.mark.parametrize("variant", ["unpruned", "pruned"])
def test_bpnet_inference_fps_onnxruntime(benchmark, bpnet_onnx, variant):
    from tlkit.export.runners import OnnxRuntimeRunner

    path, params = bpnet_onnx[variant]
    runner = OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, *BPNET_INPUT)).astype(np.float32)
    hm, paf = benchmark.pedantic(runner.run, args=(x,), rounds=10, warmup_rounds=2)
    assert hm.shape == (1, 19, 36, 48) and paf.shape == (1, 38, 36, 48)
    benchmark.extra_info.update(
        variant=variant,
        params=params,
        input="288x384",
        batch=1,
        backend="onnxruntime CPU",
        fps=round(1.0 / benchmark.stats.stats.mean, 2),
        model=str(BPNET),
    )
