"""DetectNet_v2 (TLT's): a backbone at stride 16 + coverage and bbox heads (`tlkit_detection.model`), trained
on rasterized coverage targets with TLT's cost (`tlkit_detection.loss`), decoded by clustering
(`tlkit_detection.clustering`: NMS or DBSCAN per class, in network-input pixels, as TLT)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tlkit_detection.detectors.base import Detector, Training


def postprocess(
    cov: np.ndarray,
    bbox: np.ndarray,
    classes: Sequence[str],
    input_size: tuple[int, int],
    params: Mapping[str, Any],
    orig_sizes: Sequence[tuple[int, int]],
) -> list[list[Any]]:
    """Batch heads (B, C, h, w) / (B, 4C, h, w) -> per image detections in source pixels."""
    from tlkit_detection.clustering import cluster_outputs

    out = []
    w_in, h_in = input_size
    for i, (w0, h0) in enumerate(orig_sizes):
        dets = cluster_outputs(cov[i], bbox[i], classes, input_size, params)
        s = np.array([w0 / w_in, h0 / h_in, w0 / w_in, h0 / h_in])
        for d in dets:
            d.bbox = np.asarray(d.bbox, np.float64) * s
        out.append(dets)
    return out


class DetectNetV2(Detector):
    name = "detectnet_v2"
    title = "DetectNet_v2"
    output_names = ("output_cov", "output_bbox")

    def build_for_training(self, cfg: Any, classes: list[str], ctx: list[Any], console: Any = None) -> Any:
        from tlkit_detection.model import build_for_training

        return build_for_training(cfg, classes, ctx, console)

    def build_from_meta(self, meta: dict[str, Any]) -> Any:
        from tlkit_detection.model import build_from_meta

        return build_from_meta(meta)

    def preprocess_mode(self, cfg: Any) -> str:
        from tlkit_detection.model import backbone_preprocess

        return backbone_preprocess(cfg.model.arch, cfg.model.n_layers)

    def training(self, cfg: Any, built: Any, train_ds: Any, ctx: list[Any], console: Any) -> Training:
        from tlkit.threads import loader_workers
        from tlkit_detection.data import TargetMaker, batches
        from tlkit_detection.loss import DetectNetLoss

        classes = train_ds.classes
        maker = TargetMaker(cfg, classes, built.meta["preprocessing"], train_ds.input_size)
        loss = DetectNetLoss.from_config(cfg, classes)
        workers = max(1, loader_workers(cfg.train_config.n_workers))

        def make_batches(batch_size: int, *, epoch: int, seed: int, drop_last: bool, shard: Any = None):
            return batches(
                train_ds,
                maker,
                batch_size,
                aug=cfg.augmentation_config,
                epoch=epoch,
                seed=seed,
                shuffle=True,
                drop_last=drop_last,
                workers=workers,
                shard=shard,
            )

        def validation_cost(outputs: Any, frames: Sequence[Any]) -> float:
            import mxnet as mx

            tg = [maker.targets(f.boxes, f.classes) for f in frames]
            ctx0 = outputs[0].context
            label = tuple(
                mx.nd.array(np.stack([getattr(t, k) for t in tg]), ctx=ctx0) for k in ("cov", "bbox", "cov_norm")
            )
            return float(loss(outputs, label).sum().asscalar())

        def on_epoch_end(epoch: int, row: dict) -> None:
            w = loss.update_weights()
            if w is not None:
                console.print(
                    "cost auto-weighting: "
                    + ", ".join(f"{c} cov {w[i, 0]:.3f} bbox {w[i, 1]:.3f}" for i, c in enumerate(classes))
                )

        return Training(
            loss=loss,
            batches=make_batches,
            n_frames=len(train_ds),
            distill_loss=loss.distill,
            validation_cost=validation_cost,
            on_epoch_end=on_epoch_end,
            # auto-weighted objective weights: checkpointed, restored on resume
            get_state=loss.get_state,
            set_state=loss.set_state,
            save_as_graph=built.save_as_graph,
        )

    def postprocessing(self, meta: dict[str, Any], spec: Any = None) -> dict[str, Any]:
        from tlkit_detection.clustering import ClusteringParams
        from tlkit_detection.predict import spec_postprocessing

        classes = list(meta["classes"])
        if spec_postprocessing(spec) is not None:
            return spec.postprocessing_config.params(classes)
        saved = meta.get("postprocessing") or {}
        return {c: ClusteringParams(**saved[c]) if c in saved else ClusteringParams() for c in classes}

    def decode(
        self,
        outputs: Sequence[np.ndarray],
        classes: Sequence[str],
        input_size: tuple[int, int],
        params: Mapping[str, Any],
        orig_sizes: Sequence[tuple[int, int]],
    ) -> list[list[Any]]:
        cov, bbox = outputs
        return postprocess(cov, bbox, classes, input_size, params, orig_sizes)

    def reads_outputs(self, names: Sequence[str]) -> bool:
        return list(names) in ([], list(self.output_names))

    def select_outputs(self, path: Any, outs: Sequence[Any], names: Sequence[str]) -> tuple[np.ndarray, ...]:
        from tlkit.errors import ModelFileError

        if len(outs) != 2:
            raise ModelFileError(f"{path}: expected 2 outputs (output_cov, output_bbox), the model gave {len(outs)}")
        by_name = dict(zip(names, outs))
        if "output_cov" in by_name and "output_bbox" in by_name:
            return np.asarray(by_name["output_cov"]), np.asarray(by_name["output_bbox"])
        return np.asarray(outs[0]), np.asarray(outs[1])

    def deploy_config(self, cfg: Any, classes: list[str]) -> dict[str, Any]:
        from tlkit_detection.model import deepstream_meta

        return deepstream_meta(cfg, classes)
