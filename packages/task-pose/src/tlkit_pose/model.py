"""BodyPoseNet (TLT BpNetLiteModel, OpenPose-style): backbone at stride 8 -> interface conv -> an initial stage
and `stages - 1` refinement stages, each predicting 19 heatmaps (18 parts + background) and 38 PAFs.

- A refinement stage sees the interface features concatenated with the previous stage's heatmap and PAF.
- Inference returns the last stage's (heatmap, paf); `set_all_stages(net, True)` (training) makes the net
  return every stage's maps, flat: (hm_1, paf_1, ..., hm_S, paf_S). The loss uses all of them.
- Stage-wise learning rates: refinement-stage parameters get `lr_mult` (TLT use_stagewise_lr_multipliers).
- Heads keep fixed node names (`bpnet_stage{s}_heatmap_fwd`, `bpnet_stage{s}_paf_fwd`) listed in
  meta["prune_exclude"]: the pruner never changes the 19/38 output channels.
- `build_from_meta(meta)` rebuilds the network from a model file's meta (tlkit.model_io.load_net).
- `upsample_ratio` in the build record wraps the net with a fixed bilinear x-ratio transposed convolution
  per output (TLT export --sdk_compatible_model -u 4, for DeepStream's bodypose2d app).

Inputs: NCHW float, RGB, pixel / 256 - 0.5 (TLT normalization_params); H and W multiples of 8.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlkit.errors import ModelFileError, SpecError
from tlkit.transfer import BuiltModel, ModelBuilder, count_params, load_graph_for_retraining, load_task_pretrained  # noqa: F401
from tlkit.transfer import build_for_training as build_network
from tlkit_pose.skeleton import NUM_HEATMAP_CHANNELS, NUM_PAF_CHANNELS

TASK = "pose"
PREFIX = "bpnet_"
STRIDE = 8
OUTPUT_NAMES = ["heatmap_out", "paf_out"]


def head_nodes(stages: int) -> list[str]:
    """Symbol node names of every stage's output convolutions (never pruned)."""
    return [f"{PREFIX}stage{s}_{kind}_fwd" for s in range(1, stages + 1) for kind in ("heatmap", "paf")]


def preprocessing(scale: list[float] | None = None, offset: list[float] | None = None) -> dict[str, Any]:
    """meta["preprocessing"] for TLT's x / image_scale - image_offset on RGB pixels, i.e. (x - mean) / std
    with std = scale and mean = offset * scale (DeepStream: net-scale-factor 1/256, offsets 128)."""
    scale = list(scale or [256.0] * 3)
    offset = list(offset or [0.5] * 3)
    return {
        "mode": "custom",
        "channel_order": "RGB",
        "mean": [float(o * s) for o, s in zip(offset, scale)],
        "std": [float(s) for s in scale],
        "resize_interpolation": "bicubic",
    }


def normalize(images_rgb: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """(N, H, W, 3) RGB uint8/float -> (N, 3, H, W) float32 with the model's normalization."""
    x = np.asarray(images_rgb, np.float32)
    if pre.get("channel_order") == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _classes():
    from mxnet.gluon import nn

    class Stage(nn.HybridBlock):
        """n x (3x3 conv + ReLU), 1x1 conv + ReLU, then the two 1x1 heads."""

        def __init__(self, in_channels: int, channels: int, n_convs: int, **kwargs: Any):
            super().__init__(**kwargs)
            with self.name_scope():
                self.body = nn.HybridSequential(prefix="body_")
                with self.body.name_scope():
                    cin = in_channels
                    for _ in range(n_convs):
                        self.body.add(nn.Conv2D(channels, 3, padding=1, in_channels=cin), nn.Activation("relu"))
                        cin = channels
                    self.body.add(nn.Conv2D(channels * 2, 1, in_channels=cin), nn.Activation("relu"))
                self.heatmap = nn.Conv2D(NUM_HEATMAP_CHANNELS, 1, in_channels=channels * 2, prefix="heatmap_")
                self.paf = nn.Conv2D(NUM_PAF_CHANNELS, 1, in_channels=channels * 2, prefix="paf_")

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            f = self.body(x)
            return self.heatmap(f), self.paf(f)

    class BodyPoseNet(nn.HybridBlock):
        def __init__(
            self,
            backbone: Any,
            feat_channels: int,
            stages: int = 3,
            channels: int = 128,
            n_convs: int = 3,
            **kwargs: Any,
        ):
            # fixed prefix: head node names are the same in every process (meta["prune_exclude"])
            super().__init__(prefix=PREFIX, **kwargs)
            self.n_stages = int(stages)
            self._all_stages = False
            with self.name_scope():
                self.backbone = backbone
                self.interface = nn.HybridSequential(prefix="interface_")
                with self.interface.name_scope():
                    self.interface.add(
                        nn.Conv2D(channels, 3, padding=1, in_channels=feat_channels), nn.Activation("relu")
                    )
                for s in range(1, self.n_stages + 1):
                    cin = channels if s == 1 else channels + NUM_HEATMAP_CHANNELS + NUM_PAF_CHANNELS
                    setattr(self, f"stage{s}", Stage(cin, channels, n_convs, prefix=f"stage{s}_"))

        def stage_blocks(self) -> list[Any]:
            return [getattr(self, f"stage{s}") for s in range(1, self.n_stages + 1)]

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            feat = self.interface(self.backbone(x))
            h, outs = feat, []
            for stage in self.stage_blocks():
                hm, paf = stage(h)
                outs += [hm, paf]
                h = F.concat(feat, hm, paf, dim=1)
            return tuple(outs) if self._all_stages else (outs[-2], outs[-1])

    class Upsampled(nn.HybridBlock):
        """net -> each output upsampled x`ratio` by a fixed bilinear depthwise transposed convolution."""

        def __init__(self, net: Any, ratio: int, **kwargs: Any):
            super().__init__(prefix="sdk_", **kwargs)
            self.ratio = int(ratio)
            with self.name_scope():
                self.net = net
                self.up_heatmap = _bilinear_deconv(NUM_HEATMAP_CHANNELS, self.ratio, "heatmap_up_")
                self.up_paf = _bilinear_deconv(NUM_PAF_CHANNELS, self.ratio, "paf_up_")

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            out = self.net(x)
            return self.up_heatmap(out[-2]), self.up_paf(out[-1])

    def _bilinear_deconv(c: int, r: int, prefix: str) -> Any:
        import mxnet as mx

        k = 2 * r
        layer = nn.Conv2DTranspose(
            c,
            k,
            strides=r,
            padding=r // 2,
            groups=c,
            use_bias=False,
            in_channels=c,
            prefix=prefix,
            weight_initializer=mx.init.Constant(bilinear_kernel(k)[None, None].repeat(c, 0)),
        )
        layer.weight.grad_req = "null"
        return layer

    return Stage, BodyPoseNet, Upsampled


def bilinear_kernel(k: int) -> np.ndarray:
    """(k, k) bilinear interpolation kernel of a stride-k/2 transposed convolution."""
    f = (k + 1) // 2
    c = f - 1 if k % 2 == 1 else f - 0.5
    og = np.arange(k, dtype=np.float64)
    w = 1 - np.abs(og - c) / f
    return np.outer(w, w).astype(np.float32)


def _truncate(backbone: Any, blocks: int) -> None:
    """Keep only the first `blocks` freeze-able blocks of a tlkit Backbone (their layers and parameters)."""
    n = len(backbone.block_names)
    if not backbone._block_spans:  # a plugin's Backbone subclass with its own forward: no layer list to cut
        raise SpecError(
            f"model.backbone_blocks: {backbone.arch} builds its own forward; it cannot be truncated (use null)"
        )
    if blocks > n:
        raise SpecError(
            f"model.backbone_blocks: {backbone.arch} has {n} blocks ({', '.join(backbone.block_names)}), got {blocks}"
        )
    hi = backbone._block_spans[blocks - 1][1]
    for name in backbone._layer_names[hi:]:
        del backbone._children[name]
    backbone._layer_names = backbone._layer_names[:hi]
    backbone.block_names = backbone.block_names[:blocks]
    backbone._block_spans = backbone._block_spans[:blocks]


def _feature_shape(backbone: Any, hw: tuple[int, int] = (64, 64)) -> tuple[int, int]:
    """(channels, stride) of the backbone output, from symbolic shape inference (no weights needed)."""
    import mxnet as mx

    out = backbone(mx.sym.var("data"))
    _, shapes, _ = out.infer_shape(data=(1, 3, *hw))
    c, h = int(shapes[0][1]), int(shapes[0][2])
    return c, hw[0] // h


def build_net(build: dict[str, Any]) -> Any:
    """An uninitialised BodyPoseNet from a `build` record (see `build_meta`)."""
    from tlkit.backbones import build_backbone

    arch = build.get("arch", "vgg19")
    kw: dict[str, Any] = {"out_stride": STRIDE}
    if arch.startswith("vgg"):
        kw["use_batch_norm"] = bool(build.get("use_batch_norm", True))
    backbone = build_backbone(arch, **kw)
    if build.get("backbone_blocks"):
        _truncate(backbone, int(build["backbone_blocks"]))
    feat, stride = _feature_shape(backbone)
    if stride != STRIDE:
        raise SpecError(
            f"model.backbone_blocks {build.get('backbone_blocks')}: {arch} then has stride {stride}, the model needs {STRIDE}; keep more blocks"
        )
    _, BodyPoseNet, Upsampled = _classes()
    net = BodyPoseNet(
        backbone,
        feat,
        int(build.get("stages", 3)),
        int(build.get("stage_channels", 128)),
        int(build.get("stage_convs", 3)),
    )
    if build.get("upsample_ratio"):
        return Upsampled(net, int(build["upsample_ratio"]))
    return net


def build_from_meta(meta: dict[str, Any]) -> Any:
    """TaskSpec.build_model: rebuild the (uninitialised) network of a gluon model file."""
    build = meta.get("build")
    if not isinstance(build, dict) or "arch" not in build or "stages" not in build:
        raise ModelFileError("pose model file: meta.json lacks build.arch / build.stages")
    return build_net(build)


def set_all_stages(net: Any, flag: bool) -> bool:
    """Make a BodyPoseNet return every stage (training) or only the last one (inference). A graph (pruned)
    model keeps whatever outputs its graph has; returns whether the switch applied."""
    target = getattr(net, "net", net)
    if not hasattr(target, "_all_stages"):
        return False
    target._all_stages = bool(flag)
    target._clear_cached_op()
    net._clear_cached_op()
    return True


def apply_lr_multipliers(net: Any, mult: float) -> int:
    """Refinement stages (2..S) learn `mult` times faster (TLT stage-wise LR multipliers). Returns how many
    parameters were set."""
    n = 0
    for stage in net.stage_blocks()[1:]:
        for p in stage.collect_params().values():
            p.lr_mult = float(mult)
            n += 1
    return n


def build_meta(cfg: Any) -> dict[str, Any]:
    """The model file's meta for spec `cfg` (a PoseConfig)."""
    m, dl = cfg.model, cfg.dataloader
    h, w, c = dl.image_dims
    if c != 3:
        raise SpecError(f"dataloader.image_dims: BodyPoseNet takes RGB input (3 channels), got {c}")
    if cfg.stride != STRIDE:
        raise SpecError(
            f"dataloader.image_dims / pose_config.target_shape = stride {cfg.stride}; BodyPoseNet has stride {STRIDE}"
        )
    norm = dl.normalization_params
    return {
        "task": TASK,
        "arch": m.arch,
        "classes": ["person"],
        "input_shape": [3, int(h), int(w)],
        "input_layout": "NCHW",
        "preprocessing": preprocessing(norm.image_scale, norm.image_offset),
        "output_names": list(OUTPUT_NAMES),
        "postprocessing": {
            "stride": STRIDE,
            "output_upsampling_factor": STRIDE,
            "inference": cfg.inference.model_dump(),
        },
        "prune_exclude": head_nodes(m.stages),
        # DeepStream bodypose2d: "other" network, raw tensors to the app (output-tensor-meta=1)
        "deepstream": {
            "network_type": 100,
            "properties": {"output-tensor-meta": 1, "maintain-aspect-ratio": 1, "symmetric-padding": 0},
        },
        "build": {
            "arch": m.arch,
            "backbone_blocks": m.backbone_blocks,
            "use_batch_norm": m.use_batch_norm,
            "stages": m.stages,
            "stage_channels": m.stage_channels,
            "stage_convs": m.stage_convs,
        },
    }


class PoseBuilder(ModelBuilder):
    """BodyPoseNet's part of `tlkit.transfer.build_for_training`."""

    task = TASK

    def build(self) -> tuple[Any, dict[str, Any]]:
        meta = build_meta(self.cfg)
        return build_net(meta["build"]), meta

    def load_graph(self, ctx: list[Any], console: Any) -> BuiltModel:
        # the retrained graph computes the loss on its last stage only
        return load_graph_for_retraining(
            self.cfg.train_config.pretrained_model_path,
            task=TASK,
            ctx=ctx,
            input_shape=build_meta(self.cfg)["input_shape"],
            console=console,
        )

    def finish(self, net: Any, meta: dict[str, Any]) -> None:
        m = self.cfg.model
        if m.use_stagewise_lr_multipliers:
            apply_lr_multipliers(net, m.refinement_lr_mult)
        # every stage's outputs are supervised (TLT); a QAT graph, like a pruned one, is saved as the graph it trains,
        # so it trains the inference outputs (the last stage's)
        set_all_stages(net, not self.cfg.train_config.enable_qat)


def build_for_training(cfg: Any, ctx: list[Any], console: Any = None) -> BuiltModel:
    """The network `train` starts from (`tlkit.transfer.build_for_training`): built from cfg.model (pretrained
    backbone weights or a pose .tlk loaded from train_config.pretrained_model_path), or a pruned graph with
    load_graph: true."""
    return build_network(PoseBuilder(cfg), ctx, console)
