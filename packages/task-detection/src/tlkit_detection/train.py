"""`tlkit detection train -e spec.yaml -r results`: train the spec's detector (`model_config.detector`, through
the `detectors` interface), or retrain a pruned graph.

Writes, into the results dir: the resolved spec, weights/model_epoch_NNN.tlk checkpoints and
weights/model.tlk (through tlkit.training), status.json, training.csv. Validation (every
evaluation_config.validation_period_during_training epochs when set, else train_config.validation_period;
from evaluation_config.first_validation_epoch on when set, as TLT; always after the last epoch)
clusters the validation fold's heads and reports TLT's "mean average precision" (the KPI), per-class AP
and the validation cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit_detection.data import Dataset, TargetMaker, batches, dataset_for, dropped_by_mapping, steps_per_epoch

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def evaluate_dataset(
    detector: Any,
    ds: Dataset,
    maker: TargetMaker,
    cfg: Any,
    batch_size: int,
    cost: Any = None,
    net: Any = None,
    ctx: Any = None,
) -> dict[str, Any]:
    """Detections for every frame of `ds`, scored with per-class AP (evaluation_config). With `cost(outputs,
    frames)` (and the `net` on `ctx`), also the mean validation cost from the same forward pass. Returns
    {"result": APResult, "predictions": {frame: FrameArrays}, "ground_truth": ..., "cost": float | None}."""
    from tlkit_detection.metrics import BoxFilter, evaluate_ap
    from tlkit_detection.predict import output_list, to_frame

    ev = cfg.evaluation_config
    classes = ds.classes
    preds, gts = {}, {}
    cost_sum, n = 0.0, 0
    for x, idx in batches(ds, maker, batch_size, with_targets=False):
        frames = [ds.frames[i] for i in idx]
        sizes = [f.orig_size for f in frames]
        if cost is not None:
            import mxnet as mx

            out = net(mx.nd.array(x, ctx=ctx))
            cost_sum += cost(out, frames)
            n += len(frames)
            dets = detector.decode([o.asnumpy() for o in output_list(out)], sizes)
        else:
            dets = detector.run_batch(x, sizes)
        for f, d in zip(frames, dets):
            preds[f.frame_id] = to_frame(d)
            gts[f.frame_id] = f.ground_truth(classes)
    thresholds = {k.lower(): v for k, v in ev.minimum_detection_ground_truth_overlap.items()}
    lower = {c: c.lower() for c in classes}
    filters = {
        c: BoxFilter(**(ev.per_class_box_config.get(c) or ev.evaluation_box_config).model_dump()) for c in classes
    }
    result = evaluate_ap(
        gts,
        preds,
        classes,
        {c: thresholds.get(lower[c], ev.default_overlap) for c in classes},
        mode=ev.average_precision_mode.lower(),
        num_recall_points=ev.num_recall_points,
        box_filters=filters,
        matching=ev.matching,
    )
    return {"result": result, "predictions": preds, "ground_truth": gts, "cost": cost_sum / n if n else None}


def check_spec_classes(cfg: Any, classes: list[str], console: Any) -> None:
    """Class names in the spec's per-class settings must be training classes (SpecError otherwise, with a
    suggestion); source classes target_class_mapping drops are reported with their object counts."""
    from tlkit.context import print_warning
    from tlkit.errors import SpecError, did_you_mean

    for path, names in cfg.named_classes().items():
        # evaluation compares class names in lower case; the per_class lookups are exact
        known = {c.lower(): c for c in classes} if path.endswith("overlap") else {c: c for c in classes}
        for name in names:
            if (name.lower() if path.endswith("overlap") else name) not in known:
                raise SpecError(
                    f"{path}.{name}: {name!r} is not a training class{did_you_mean(name, classes)} (classes: "
                    f"{', '.join(classes)}); its settings would never apply"
                )
    dropped = dropped_by_mapping(cfg)
    if dropped:
        print_warning(
            console,
            "dataset_config.target_class_mapping maps no target for "
            + ", ".join(f"{c} ({n} objects)" for c, n in sorted(dropped.items()))
            + ": their objects are dropped (TLT semantics); map them to train on them",
        )


def training_datasets(cfg: Any, results_dir: Path, console: Any) -> tuple[Dataset, Dataset | None]:
    """The training and (when the spec has one) validation datasets, announced (the spec's class names
    checked against them)."""
    train_ds = dataset_for(cfg, "training")
    classes = train_ds.classes
    check_spec_classes(cfg, classes, console)
    dc = cfg.dataset_config
    has_val = dc.validation_data_source is not None or dc.validation_fold is not None
    val_ds = dataset_for(cfg, "validation", classes) if has_val else None
    n_obj = sum(len(f.classes) for f in train_ds.frames)
    console.print(
        f"train: {len(train_ds)} frames, {n_obj} objects of {len(classes)} classes {classes}"
        + (f"; validation: {len(val_ds)} frames" if val_ds is not None else "; no validation data")
    )
    return train_ds, val_ds


def card_datasets(cfg: Any, train_ds: Dataset, val_ds: Dataset | None) -> list[Any]:
    """The model card's records of the training and validation frames: objects per class, frame-id hash."""
    from tlkit.model_card import DatasetInfo

    dc = cfg.dataset_config
    val_path = (
        dc.validation_data_source.records_path
        if dc.validation_data_source is not None
        else f"fold {dc.validation_fold} of the training sources"
    )
    train_path = ", ".join(s.records_path for s in dc.data_sources)
    out = []
    for split, ds, path in (("train", train_ds, train_path), ("validation", val_ds, val_path)):
        if ds is None:
            continue
        labels = np.concatenate([f.classes for f in ds.frames]).astype(np.int64)
        counts = dict(zip(ds.classes, np.bincount(labels, minlength=len(ds.classes)).tolist()))
        out.append(
            DatasetInfo.from_items(
                split,
                (f.frame_id for f in ds.frames),
                counts,
                path=path,
                format="dataset_convert records",
                count_unit="objects",
            )
        )
    return out


def train_model(cfg: Any, results_dir: Path, console: Any, ctx_list: list[Any], *, use_amp: bool = False) -> Any:
    """Everything `train` does; returns tlkit.training's TrainResult."""
    from tlkit.training import train

    job = build_job(cfg, results_dir, console, ctx_list)
    tc, _ = cfg.evaluation_config.training_validation(cfg.train_config)  # TLT's periods, when the spec sets them
    return train(job, tc, results_dir, ctx_list, console, use_amp)


def build_job(cfg: Any, results_dir: Path, console: Any, ctx_list: list[Any]) -> Any:
    """The TrainJob `train` runs for the spec's detector (TaskSpec.train_job: `prune -e` and `compress` too)."""
    from tlkit.config import resolved_spec_text
    from tlkit.distributed import world
    from tlkit.training import TrainJob
    from tlkit_detection import detectors
    from tlkit_detection.model import count_params
    from tlkit_detection.predict import net_detector

    detector = detectors.get(cfg.model.detector)
    tc, ev = cfg.train_config, cfg.evaluation_config
    train_ds, val_ds = training_datasets(cfg, Path(results_dir), console)
    classes = train_ds.classes
    built = detector.build_for_training(cfg, classes, ctx_list, console)
    meta = built.meta
    console.print(
        f"model: {detector.title} {meta['arch']}, {count_params(built.net):,} parameters, "
        f"input {tuple(meta['input_shape'])}"
    )
    parts = detector.training(cfg, built, train_ds, ctx_list, console)
    node = world()  # multi-node training: batches are global, each node decodes and trains its slice
    bs = node.global_batch(tc.batch_size_per_gpu, len(ctx_list))
    drop_last = node.drop_last(parts.n_frames, bs)

    def train_data(epoch: int):
        return parts.batches(bs, epoch=epoch, seed=tc.random_seed, drop_last=drop_last, shard=node)

    validate = None
    if val_ds is not None:
        maker = TargetMaker(cfg, classes, meta["preprocessing"], val_ds.input_size)
        params = detector.postprocessing(meta, cfg)

        def validate(net: Any, ctx: list[Any]) -> dict[str, float]:
            # a hybridized net keeps the graph of the mode it was traced in: when the training graph gives
            # other outputs, trace the inference graph here and the training one again afterwards
            if detector.retrace_to_validate:
                net._clear_cached_op()
            try:
                out = evaluate_dataset(
                    net_detector(net, meta, ctx[0], params, detector),
                    val_ds,
                    maker,
                    cfg,
                    bs,
                    cost=parts.validation_cost,
                    net=net,
                    ctx=ctx[0],
                )
            finally:
                if detector.retrace_to_validate:
                    net._clear_cached_op()
            r = out["result"]
            metrics = {"mean average precision": float(r.mean_ap)}
            if out["cost"] is not None:
                metrics["validation cost"] = float(out["cost"])
            metrics.update({f"AP {c}": float(r.classes[c].ap) for c in classes})
            return metrics

    _, first_validation = ev.training_validation(tc)  # TLT's first_validation_epoch, when the spec sets it
    return TrainJob(
        net=built.net,
        train_data=train_data,
        steps_per_epoch=steps_per_epoch(parts.n_frames, bs, drop_last),
        loss=parts.loss,
        meta=meta,
        validate=validate,
        kpi="mean average precision" if validate is not None else None,
        frozen=built.frozen,
        freeze_bn=cfg.model.freeze_bn,
        save_as_graph=parts.save_as_graph,
        on_epoch_end=parts.on_epoch_end,
        get_task_state=parts.get_state,
        set_task_state=parts.set_state,
        distill_loss=parts.distill_loss,
        load_teacher=parts.load_teacher,
        datasets=card_datasets(cfg, train_ds, val_ds),
        first_validation_epoch=first_validation,
        run_files={"experiment_spec.yaml": resolved_spec_text(cfg)},  # written once the engine accepts the dir
        sharded=True,
    )


def run(ctx: CommandContext) -> dict[str, Any]:
    results_dir = ctx.require_results_dir()
    res = train_model(ctx.spec, results_dir, ctx.console, ctx.contexts(), use_amp=ctx.use_amp)
    ctx.console.print(f"model: {res.model_path}")
    metrics = res.final_metrics or {}
    if metrics:
        ctx.console.print(", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return {"model": str(res.model_path), **metrics}
