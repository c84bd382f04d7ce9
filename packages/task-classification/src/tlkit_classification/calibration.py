"""`tlkit classification calibration_tensorfile`: dump preprocessed batches (training pipeline, no
augmentation) into TLT's HDF5 tensorfile for int8 calibration.

Format (TLT `tensorfile.py`): file attrs `count` (batches) and `shape` (of every batch); batch i is group
`_tensorfile_array_key__<i>` holding dataset `_tensorfile_array_key_` (N, C, H, W float32, gzip). Written
by core's shared writer (`tlkit.export.tensorfile.write_tensorfile`), which export's int8 path reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlkit.errors import SpecError, TlkitError

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def run(ctx: CommandContext) -> dict[str, Any]:
    from tlkit_classification.data import Pipeline, batches, open_image_folder
    from tlkit_classification.model import _preprocessing

    cfg = ctx.spec
    out = ctx.output
    if out is None:
        raise TlkitError("calibration_tensorfile: -o/--output is required (the .tensorfile/.h5 to write)")
    use_val = bool(ctx.option("use_validation_set"))
    path = cfg.dataset_config.val_dataset_path if use_val else cfg.dataset_config.train_dataset_path
    if not path:
        key = "val_dataset_path" if use_val else "train_dataset_path"
        raise SpecError(f"calibration_tensorfile: dataset_config.{key} is not set")
    m = cfg.model
    if ctx.model and str(ctx.model).endswith(".tlk"):  # exactly what that model was trained with
        from tlkit.model_io import read_meta

        pre = read_meta(ctx.model)["preprocessing"]
    else:
        auto = cfg.augmentation_config.preprocess_mode == "auto"
        pre = _preprocessing(cfg, _backbone_default(m.arch, m.n_layers) if auto else None)
    ds = open_image_folder(
        path,
        extensions=cfg.dataset_config.image_extensions,
        strict=not cfg.dataset_config.skip_corrupt,
        channels=m.input_shape[0],
        max_side=int(max(m.input_shape[1:]) / 0.875 * 1.25),
        what="dataset",
    )
    pipe = Pipeline(
        m.input_shape,
        pre,
        interp=m.resize_interpolation_method,
        train=False,
        center_crop=bool(pre.get("center_crop", cfg.augmentation_config.enable_center_crop)),
    )
    bs = cfg.train_config.batch_size_per_gpu
    max_batches = int(ctx.option("max_batches"))
    n_full = len(ds) // bs
    if n_full == 0:
        raise TlkitError(f"{ds.root}: {len(ds)} images, fewer than one batch of {bs} (train_config.batch_size_per_gpu)")
    n = n_full if max_batches < 0 else min(max_batches, n_full)
    gen = batches(ds, pipe, bs, shuffle=True, seed=cfg.train_config.random_seed, drop_last=True)
    from tlkit.export.tensorfile import tensorfile_info, write_tensorfile

    write_tensorfile(out, (x for _, (x, _y) in zip(range(n), gen)))
    count, shape = tensorfile_info(out)
    ctx.console.print(f"wrote {count} batch(es) of shape {shape} to {out}")
    return {"tensorfile": str(out), "count": count}


def _backbone_default(arch: str, n_layers: int | None) -> Any:
    """The backbone's default preprocessing (for preprocess_mode auto); builds no weights."""
    from tlkit.backbones import build_backbone

    return getattr(build_backbone(arch, n_layers=n_layers, out_stride=32), "default_preprocess", None)
