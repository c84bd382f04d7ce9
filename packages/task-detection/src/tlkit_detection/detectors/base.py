"""The interface every detector of `tlkit detection` implements (`model_config.detector: <name>`).

`train`, `evaluate -m`, `inference`, `prune -e`/`compress` (through `train.build_job`) and `TaskSpec.build_model`
call a detector only through these methods; they never ask which detector it is. One detector = one module
with a `Detector` subclass, registered by name (see `tlkit_detection.detectors`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Training:
    """What a detector adds to `train`'s TrainJob (the loop, checkpoints and validation are shared).

    `batches(batch_size, epoch=, seed=, drop_last=, shard=)` yields `(x (B,3,H,W), label)` for `loss(net(x),
    label) -> (B,)`; `n_frames` is how many training frames one epoch uses (for steps per epoch and drop_last).
    `validation_cost(outputs, frames) -> float` (sum over the frames) adds "validation cost" to validation.
    `distill_loss(student_outputs, teacher_outputs, temperature) -> (B,)` enables train_config.distillation;
    `load_teacher(path, ctx_list)` when the teacher's inference outputs are not the student's training ones."""

    loss: Callable[[Any, Any], Any]
    batches: Callable[..., Iterator[tuple[np.ndarray, Any]]]
    n_frames: int
    distill_loss: Callable[[Any, Any, float], Any] | None = None
    load_teacher: Callable[[Any, list[Any]], Any] | None = None
    validation_cost: Callable[[Any, Sequence[Any]], float] | None = None
    on_epoch_end: Callable[[int, dict], None] | None = None
    get_state: Callable[[], dict] | None = None
    set_state: Callable[[dict], None] | None = None
    save_as_graph: bool = False


class Detector:
    """A detector: how to build, train, decode, export and deploy it. Subclass and override every method that
    raises NotImplementedError; the rest have working defaults.

    Model files: `build_for_training` returns meta with "task": "detection", "detector": `name`, "classes",
    "input_shape", "preprocessing", "postprocessing" (per class, what `postprocessing` reads back), the
    `export_outputs` entries and "deepstream" (`deploy_config`), and "build" (what `build_from_meta` needs)."""

    name: str = ""  # model_config.detector and meta["detector"]
    title: str = ""  # how `train` announces the model ("DetectNet_v2 resnet18, ...")
    output_names: tuple[str, ...] = ()  # the .tlk network's outputs, in order
    # True when a network hybridized in training mode returns other outputs (SSD's raw predictions):
    # validation then traces the inference graph and the training graph again afterwards
    retrace_to_validate: bool = False

    # -- model -------------------------------------------------------------------------------------------

    def build_for_training(self, cfg: Any, classes: list[str], ctx: list[Any], console: Any = None) -> Any:
        """tlkit.transfer.BuiltModel: the initialised network `train` starts from (pretrained weights loaded,
        or train_config.load_graph's pruned graph), its meta and frozen parameters."""
        raise NotImplementedError

    def build_from_meta(self, meta: dict[str, Any]) -> Any:
        """The uninitialised network a gluon model file was saved from (TaskSpec.build_model)."""
        raise NotImplementedError

    def preprocess_mode(self, cfg: Any) -> str:
        """The input normalization ("caffe", "torch" or "tf") `model_config.preprocess_mode: auto` means:
        what the backbone's pretrained weights expect (`calibration_tensorfile` without -m reads it)."""
        return "torch"

    # -- training ----------------------------------------------------------------------------------------

    def training(self, cfg: Any, built: Any, train_ds: Any, ctx: list[Any], console: Any) -> Training:
        """Targets, batches and loss (and distillation) for `built` on the training dataset."""
        raise NotImplementedError

    # -- inference ---------------------------------------------------------------------------------------

    def postprocessing(self, meta: dict[str, Any], spec: Any = None) -> dict[str, Any]:
        """Per-class post-processing settings: the spec's postprocessing_config when it sets one, else the
        model's own (meta["postprocessing"])."""
        raise NotImplementedError

    def decode(
        self,
        outputs: Sequence[np.ndarray],
        classes: Sequence[str],
        input_size: tuple[int, int],
        params: Mapping[str, Any],
        orig_sizes: Sequence[tuple[int, int]],
    ) -> list[list[Any]]:
        """Network outputs of a batch (numpy, `select_outputs`' order) -> per image a list of
        clustering.Detection in the pixels of each source image (orig_sizes: (w, h))."""
        raise NotImplementedError

    def reads_outputs(self, names: Sequence[str]) -> bool:
        """Whether a model file with these outputs (an ONNX file has no meta["detector"]) is this detector's."""
        return list(names) == list(self.output_names)

    def select_outputs(self, path: Any, outs: Sequence[Any], names: Sequence[str]) -> tuple[np.ndarray, ...]:
        """A runner's outputs (named `names`, in the file's order) in the order `decode` takes them;
        ModelFileError when the model does not give them."""
        from tlkit.errors import ModelFileError

        by_name = dict(zip(names, outs))
        if all(n in by_name for n in self.output_names):
            return tuple(np.asarray(by_name[n]) for n in self.output_names)
        if len(outs) != len(self.output_names):
            raise ModelFileError(f"{path}: expected the outputs {list(self.output_names)}, the model gave {len(outs)}")
        return tuple(np.asarray(o) for o in outs)

    # -- export and deployment ---------------------------------------------------------------------------

    def export_outputs(self, postprocessing: dict[str, Any]) -> dict[str, Any]:
        """The meta entries core's ONNX export reads: "output_names", and "export_nms" when the export puts
        NMS into the graph (tlkit.export.nms)."""
        return {"output_names": list(self.output_names)}

    def deploy_config(self, cfg: Any, classes: list[str]) -> dict[str, Any]:
        """meta["deepstream"]: the nvinfer settings core's DeepStream/Triton writer turns into files."""
        raise NotImplementedError
