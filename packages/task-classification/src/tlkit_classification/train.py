"""`tlkit classification train`: (fine-)tune a classifier, or retrain a pruned graph (load_graph: true).

Writes, into the results dir: classmap.json, the resolved spec, weights/model_epoch_NNN.tlk checkpoints and
weights/model.tlk (through tlkit.training), status.json; the final KPI is validation_accuracy. A re-run resumes;
one on other classes is refused (`--restart` starts over, keeping the old run's files).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import DataError
from tlkit.threads import loader_workers
from tlkit_classification.data import ImageFolder, Pipeline, batches, classmap_text, open_image_folder, steps_per_epoch
from tlkit_classification.evaluate import eval_pipeline

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def soft_cross_entropy(outputs: Any, label: Any) -> Any:
    """Per-sample cross-entropy against soft targets (one-hot, smoothed or mixed): -sum(t * log p)."""
    import mxnet as mx

    return -(mx.nd.log_softmax(outputs, axis=-1) * label).sum(axis=1)


def open_datasets(
    cfg: Any, strict: bool, console: Any = None, classes: list[str] | None = None
) -> tuple[ImageFolder, ImageFolder | None]:
    dc, m = cfg.dataset_config, cfg.model
    strict = strict or not dc.skip_corrupt
    common = dict(
        extensions=dc.image_extensions,
        strict=strict,
        channels=m.input_shape[0],
        cache=dc.cache_images,
        cache_limit_mb=dc.cache_limit_mb,
        max_side=int(max(m.input_shape[1:]) / 0.875 * 1.25),  # enough for the crops, no more
        workers=max(1, loader_workers(cfg.train_config.n_workers)),
    )
    train = open_image_folder(
        dc.train_dataset_path, classes=classes, what="dataset_config.train_dataset_path", **common
    )
    val = None
    if dc.val_dataset_path:
        val = open_image_folder(
            dc.val_dataset_path, classes=train.classes, what="dataset_config.val_dataset_path", **common
        )
    for ds in (train, val):
        if ds is not None and ds.corrupt and console is not None:
            console.print(f"[yellow]warning:[/] {ds.problems()}")
    if len(train) < 1:
        raise DataError(f"{train.root}: no readable training images")
    return train, val


def card_dataset(split: str, ds: ImageFolder) -> Any:
    """The model card's record of an image folder: images per class and the hash of its file list."""
    from tlkit.model_card import DatasetInfo

    counts = np.bincount(ds.labels, minlength=len(ds.classes)) if len(ds) else np.zeros(len(ds.classes), int)
    files = (p.relative_to(ds.root).as_posix() for p, _ in ds.samples)
    return DatasetInfo.from_items(
        split, files, dict(zip(ds.classes, counts.tolist())), path=ds.root, format="image_folder"
    )


def train_pipeline(cfg: Any, meta: dict[str, Any]) -> Pipeline:
    aug = cfg.augmentation_config
    return Pipeline(
        tuple(meta["input_shape"]),
        meta["preprocessing"],
        interp=cfg.model.resize_interpolation_method,
        train=True,
        random_crop=aug.enable_random_crop,
        crop_min_scale=aug.random_crop_min_scale,
        hflip=not aug.disable_horizontal_flip,
        color=aug.enable_color_augmentation,
        label_smoothing=aug.label_smoothing,
        mixup_alpha=aug.mixup_alpha,
    )


def make_validate(val: ImageFolder | None, meta: dict[str, Any], batch_size: int, workers: int):
    """validate(net, ctx_list) -> {validation_loss, validation_accuracy} (None without a val set)."""
    if val is None:
        return None
    pipe = eval_pipeline(meta)

    def validate(net: Any, ctx_list: list[Any]) -> dict[str, float]:
        import mxnet as mx

        total_loss, correct, n = 0.0, 0, 0
        for x, y in batches(val, pipe, batch_size, workers=workers):
            out = net(mx.nd.array(x, ctx=ctx_list[0]))
            logp = mx.nd.log_softmax(out, axis=-1).asnumpy()
            total_loss += float(-logp[np.arange(len(y)), y].sum())
            correct += int((logp.argmax(axis=1) == y).sum())
            n += len(y)
        return {"validation_loss": total_loss / n, "validation_accuracy": correct / n}

    return validate


def distill_loss(outputs: Any, teacher: Any, temperature: float) -> Any:
    """Soft-label distillation: KL divergence of the temperature-softened class probabilities, x T^2."""
    from tlkit.training.distill import soft_label_kl

    return soft_label_kl(outputs, teacher, temperature)


def build_job(
    cfg: Any,
    results_dir: Path,
    console: Any,
    ctx_list: list[Any],
    *,
    strict: bool = False,
    classes: list[str] | None = None,
) -> Any:
    """The TrainJob `train` runs (TaskSpec.train_job: `prune -e` and `compress` build it too)."""
    from tlkit.config import resolved_spec_text
    from tlkit.distributed import world
    from tlkit.training import TrainJob
    from tlkit_classification.model import build_for_training, count_params

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train_config
    train_ds, val_ds = open_datasets(cfg, strict, console, classes)
    console.print(
        f"train: {len(train_ds)} images in {len(train_ds.classes)} classes"
        + (f"; val: {len(val_ds)} images" if val_ds is not None else "; no validation set")
    )
    built = build_for_training(cfg, train_ds.classes, ctx_list, console)
    console.print(
        f"model: {cfg.model.arch}, {count_params(built.net):,} parameters, input {tuple(built.meta['input_shape'])}"
    )
    pipe = train_pipeline(cfg, built.meta)
    node = world()  # multi-node training: batches are global, each node decodes and trains its slice
    bs = node.global_batch(tc.batch_size_per_gpu, len(ctx_list))
    drop_last = node.drop_last(len(train_ds), bs)
    steps = steps_per_epoch(len(train_ds), bs, drop_last)
    workers = max(1, loader_workers(tc.n_workers))

    def train_data(epoch: int):
        return batches(
            train_ds,
            pipe,
            bs,
            epoch=epoch,
            seed=tc.random_seed,
            shuffle=True,
            drop_last=drop_last,
            workers=workers,
            as_nd=True,
            shard=node,
        )

    return TrainJob(
        net=built.net,
        train_data=train_data,
        steps_per_epoch=steps,
        loss=soft_cross_entropy,
        meta=built.meta,
        validate=make_validate(val_ds, built.meta, cfg.eval_config.batch_size, workers),
        kpi="validation_accuracy" if val_ds is not None else None,
        frozen=built.frozen,
        freeze_bn=cfg.model.freeze_bn,
        save_as_graph=built.save_as_graph,
        distill_loss=distill_loss,
        datasets=[card_dataset(s, ds) for s, ds in (("train", train_ds), ("validation", val_ds)) if ds is not None],
        # written by the engine once it accepts the results dir (a refused re-run changes no file)
        run_files={"classmap.json": classmap_text(train_ds.classes), "experiment_spec.yaml": resolved_spec_text(cfg)},
        sharded=True,
    )


def train_model(
    cfg: Any,
    results_dir: Path,
    console: Any,
    ctx_list: list[Any],
    *,
    strict: bool = False,
    use_amp: bool = False,
    classes: list[str] | None = None,
) -> Any:
    """Everything `train` does; returns tlkit.training's TrainResult (the demo calls this too)."""
    from tlkit.training import train

    job = build_job(cfg, results_dir, console, ctx_list, strict=strict, classes=classes)
    return train(job, cfg.train_config, results_dir, ctx_list, console, use_amp)


def run(ctx: CommandContext) -> dict[str, Any]:
    results_dir = ctx.require_results_dir()
    classes = None
    if ctx.options.get("classmap"):
        from tlkit_classification.data import read_classmap

        classes = read_classmap(ctx.options["classmap"])
    res = train_model(
        ctx.spec,
        results_dir,
        ctx.console,
        ctx.contexts(),
        strict=bool(ctx.options.get("strict")),
        use_amp=ctx.use_amp,
        classes=classes,
    )
    ctx.console.print(f"model: {res.model_path}")
    if res.final_metrics:
        ctx.console.print(", ".join(f"{k} {v:.4f}" for k, v in res.final_metrics.items() if isinstance(v, float)))
    return {"model": str(res.model_path), **{k: v for k, v in (res.final_metrics or {}).items()}}
