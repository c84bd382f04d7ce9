"""`tlkit pose train`: train BodyPoseNet (or retrain a pruned graph with train_config.load_graph: true).

Loss: masked L2 on every stage's heatmaps and PAFs (TLT BpNetLoss), per sample, averaged over the output
cells. Validation (every train_config.validation_period epochs, when dataloader.val_annotations is set):
COCO keypoint AP of the decoded people on the val set; the KPI is "AP" (best model: weights/model_best.tlk).
Writes the resolved spec, weights/*.tlk, status.json, training.csv (tlkit.training).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.context import print_warning
from tlkit.errors import DataError

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def pose_loss(outputs: Any, label: Any) -> Any:
    """Per-sample masked L2: sum over stages of sum((out - target)^2 * mask) / (Ht * Wt), heatmaps and PAFs.

    `outputs`: (hm_1, paf_1, ..., hm_S, paf_S) (a graph model may give only the last pair);
    `label`: (heatmap target, paf target, mask (N, 1, Ht, Wt))."""
    import mxnet as mx

    hm_t, paf_t, mask = label
    outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if not outs or len(outs) % 2:  # none: was a TypeError from `None / cells` below
        raise DataError(f"pose loss: expected (heatmap, paf) pairs of outputs, got {len(outs)} outputs")
    cells = float(hm_t.shape[2] * hm_t.shape[3])
    total = None
    for hm, paf in zip(outs[0::2], outs[1::2]):
        for out, target in ((hm, hm_t), (paf, paf_t)):
            err = mx.nd.broadcast_mul(mx.nd.square(out - target), mask).sum(axis=(1, 2, 3))
            total = err if total is None else total + err
    assert total is not None  # outs has at least one pair
    return total / cells


def make_validate(cfg: Any, meta: dict[str, Any]):
    """validate(net, ctx_list) -> {"AP", "AP50", ...} on dataloader.val_annotations (None without it)."""
    dl = cfg.dataloader
    if not dl.val_annotations:
        return None

    def validate(net: Any, ctx_list: list[Any]) -> dict[str, float]:
        from tlkit_pose.evaluate import evaluate_keypoints
        from tlkit_pose.predict import PosePredictor, coco_images, net_forward, predict_coco

        predictor = PosePredictor(
            net_forward(net, ctx_list[0]), meta, cfg.inference, batch_size=cfg.train_config.batch_size_per_gpu
        )
        _, items = coco_images(dl.val_annotations, dl.val_images)
        result = evaluate_keypoints(dl.val_annotations, predict_coco(predictor, items))
        return {k: v for k, v in result["metrics"].items() if k in ("AP", "AP50", "AP75", "AR")}

    return validate


def distill_loss(outputs: Any, teacher: Any, temperature: float) -> Any:
    """Pose distillation: the masked-L2 loss of every student stage against the teacher's final heatmaps and
    PAFs (the teacher runs in inference mode: its last stage), everywhere (mask 1)."""
    import mxnet as mx

    hm_t, paf_t = (teacher[-2], teacher[-1]) if isinstance(teacher, (list, tuple)) else (None, None)
    if hm_t is None:
        raise DataError("pose distillation: the teacher must output (heatmap, paf)")
    mask = mx.nd.ones((hm_t.shape[0], 1, hm_t.shape[2], hm_t.shape[3]), ctx=hm_t.context)
    return pose_loss(outputs, (hm_t, paf_t, mask))


def train_model(
    cfg: Any,
    results_dir: Path,
    console: Any,
    ctx_list: list[Any],
    *,
    use_amp: bool = False,
    samples: list | None = None,
) -> Any:
    """Everything `train` does; returns tlkit.training's TrainResult. `samples` overrides the spec's
    training data (e.g. `data.samples_from_memory` of synthetic images)."""
    from tlkit.training import train

    job = build_job(cfg, results_dir, console, ctx_list, samples=samples)
    return train(job, cfg.train_config, results_dir, ctx_list, console, use_amp)


def build_job(cfg: Any, results_dir: Path, console: Any, ctx_list: list[Any], *, samples: list | None = None) -> Any:
    """The TrainJob `train` runs (TaskSpec.train_job: `prune -e` and `compress` build it too)."""
    from tlkit.config import resolved_spec_text
    from tlkit.distributed import world
    from tlkit.training import TrainJob
    from tlkit_pose import data
    from tlkit_pose.model import build_for_training, count_params

    results_dir = Path(results_dir)
    tc = cfg.train_config
    samples = samples if samples is not None else data.open_train_samples(cfg, lambda msg: print_warning(console, msg))
    built = build_for_training(cfg, ctx_list, console)
    console.print(
        f"train: {len(samples)} images; model {cfg.model.arch}, {cfg.model.stages} stages, "
        f"{count_params(built.net):,} parameters, input {tuple(built.meta['input_shape'])}"
    )
    node = world()  # multi-node training: batches are global, each node makes and trains its slice
    bs = node.global_batch(tc.batch_size_per_gpu, len(ctx_list))
    drop_last = node.drop_last(len(samples), bs)
    steps = data.steps_per_epoch(len(samples), bs, drop_last)
    pre = built.meta["preprocessing"]

    def train_data(epoch: int):
        return data.batches(samples, cfg, pre, bs, epoch, tc.random_seed, shuffle=True, drop_last=drop_last, shard=node)

    validate = make_validate(cfg, built.meta)
    return TrainJob(
        net=built.net,
        train_data=train_data,
        steps_per_epoch=steps,
        loss=pose_loss,
        meta=built.meta,
        validate=validate,
        kpi="AP" if validate is not None else None,
        frozen=built.frozen,
        freeze_bn=cfg.model.freeze_bn,
        save_as_graph=built.save_as_graph,
        distill_loss=distill_loss,
        datasets=[card_dataset(cfg, samples)],
        run_files={"experiment_spec.yaml": resolved_spec_text(cfg)},  # written once the engine accepts the dir
        sharded=True,
    )


def card_dataset(cfg: Any, samples: list) -> Any:
    """The model card's record of the training images: labeled people, image-id hash."""
    from tlkit.model_card import DatasetInfo

    dl = cfg.dataloader
    people = int(sum(len(s.keypoints) for s in samples))
    return DatasetInfo.from_items(
        "train",
        (str(s.image_id) for s in samples),
        {"person": people},
        path=dl.train_records or dl.train_annotations,
        format="records" if dl.train_records else "coco",
        count_unit="people",
    )


def run(ctx: CommandContext) -> dict[str, Any]:
    """`tlkit pose train -e spec.yaml -r results`."""
    res = train_model(ctx.spec, ctx.require_results_dir(), ctx.console, ctx.contexts(), use_amp=ctx.use_amp)
    ctx.console.print(f"model: {res.model_path}")
    if res.final_metrics:
        ctx.console.print(
            ", ".join(f"{k} {v:.4f}" for k, v in res.final_metrics.items() if isinstance(v, float)), markup=False
        )
    return {"model": str(res.model_path), **dict(res.final_metrics or {})}
