"""`tlkit detection calibration_tensorfile -e spec.yaml -o cal.tensorfile [-m model.tlk] [--max_batches N]`:
dump preprocessed batches of the training split (the validation split with --use_validation_set), with the
training preprocessing and augmentation off, into TLT's HDF5 tensorfile (core's writer) for int8 calibration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlkit.errors import TlkitError

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def run(ctx: CommandContext) -> dict[str, Any]:
    from tlkit.export.tensorfile import tensorfile_info, write_tensorfile
    from tlkit_detection import detectors
    from tlkit_detection.data import TargetMaker, batches, dataset_for

    cfg = ctx.spec
    if ctx.output is None:
        raise TlkitError("calibration_tensorfile: -o/--output is required (the .tensorfile/.h5 to write)")
    if ctx.model is not None and str(ctx.model).endswith(".tlk"):  # exactly what that model was trained with
        from tlkit.model_io import read_meta

        pre = read_meta(ctx.model)["preprocessing"]
    else:
        m = cfg.model
        pre = {
            "mode": m.preprocess_mode if m.preprocess_mode != "auto" else detectors.get(m.detector).preprocess_mode(cfg)
        }
    split = "validation" if ctx.option("use_validation_set") else "training"
    ds = dataset_for(cfg, split)
    maker = TargetMaker(cfg, ds.classes, pre, ds.input_size)
    bs = cfg.train_config.batch_size_per_gpu
    n_full = len(ds) // bs
    if n_full == 0:
        raise TlkitError(
            f"the {split} split has {len(ds)} frames, fewer than one batch of {bs} (train_config.batch_size_per_gpu)"
        )
    max_batches = int(ctx.option("max_batches"))
    n = n_full if max_batches < 0 else min(max_batches, n_full)
    gen = batches(ds, maker, bs, shuffle=True, seed=cfg.train_config.random_seed, drop_last=True, with_targets=False)
    write_tensorfile(ctx.output, (x for _, (x, _idx) in zip(range(n), gen)))
    count, shape = tensorfile_info(ctx.output)
    ctx.console.print(f"wrote {count} batch(es) of shape {shape} to {ctx.output}")
    return {"tensorfile": str(ctx.output), "count": count}
