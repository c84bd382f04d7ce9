"""`tlkit pose export`: core's ONNX export (fp32/fp16/int8 with --cal_image_dir, --gen_ds_config,
--gen_triton_repo) plus TLT's `--sdk_compatible_model [-u 4]`: a fixed bilinear x`u` transposed convolution
is baked onto both outputs (DeepStream's bodypose2d app expects outputs at stride 8 / u = 2).

The DeepStream config (--gen_ds_config) is network-type=100 with output-tensor-meta=1 (post-processing in
the app), from meta["deepstream"] of the model file.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.errors import SpecError, TlkitError

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def sdk_compatible_model(model: Path, output: Path, ratio: int = 4) -> Path:
    """Write `output` (.tlk, graph kind): the model with its heatmap and PAF upsampled x`ratio` in-graph."""
    from tlkit.model_io import load_net, save_net
    from tlkit_pose.model import STRIDE, _classes

    if ratio < 2 or ratio % 2 or STRIDE % ratio:
        raise SpecError(f"--upsample_ratio must be 2, 4 or 8 (a divisor of the stride {STRIDE}), got {ratio}")
    net, meta = load_net(model)
    if meta.get("task") != "pose":
        raise TlkitError(f"{model}: a {meta.get('task')!r} model, not a pose model")
    if meta.get("sdk_compatible"):
        raise TlkitError(f"{model}: already upsampled (sdk_compatible {meta['sdk_compatible']})")
    _, _, Upsampled = _classes()
    wrapped = Upsampled(net, ratio)
    wrapped.up_heatmap.initialize()
    wrapped.up_paf.initialize()
    meta = {
        k: v for k, v in meta.items() if k not in ("format", "format_version", "tlkit_version", "kind", "train_state")
    }
    post = dict(meta.get("postprocessing") or {})
    post.update(stride=STRIDE // ratio, output_upsampling_factor=STRIDE // ratio)
    meta.update(postprocessing=post, sdk_compatible={"upsample_ratio": ratio}, source_model=str(model))
    return save_net(output, wrapped, meta, as_graph=True)


def run(ctx: CommandContext) -> dict[str, Any]:
    from tlkit.export.command import run as core_run

    if not ctx.option("sdk_compatible_model"):
        return core_run(ctx)
    if ctx.model is None:
        raise TlkitError("tlkit pose export: -m/--model (a .tlk model file) is required")
    model = Path(ctx.model)
    if model.suffix.lower() == ".onnx":
        raise TlkitError(f"{model}: already ONNX; export takes a .tlk model file")
    output = Path(ctx.output) if ctx.output else (ctx.results_dir or model.parent) / (model.stem + ".onnx")
    ratio = int(ctx.option("upsample_ratio"))
    with tempfile.TemporaryDirectory(prefix="tlkit-pose-sdk-") as tmp:
        wrapped = sdk_compatible_model(model, Path(tmp) / f"{model.stem}.tlk", ratio)
        out = core_run(dataclasses.replace(ctx, model=wrapped, output=output))
    ctx.console.print(f"sdk-compatible: outputs upsampled x{ratio} in the graph (stride {8 // ratio})")
    return {**out, "upsample_ratio": ratio}
