"""`ModelMeta`: the record in a model file's ``meta.json``, the contract between the tasks and the core's stages.

A task's `build_for_training` fills it, training adds the run's keys, prune / export / deploy / the model card read
it. Every key tlkit knows is a field below, with what it means and who writes it; a plugin may add keys of its
own (they are kept as they are: ``extra="allow"``). `tlkit.model_io` is the one place that reads and writes it:
`save_model` checks it before writing and `read_meta` before returning it, so a bad value is one error naming the
file and the key, not a KeyError three stages later.

Versions (``format_version``, the version of the whole ``.tlk`` file):
- 0: files written before the field existed. Read as version 1 (same keys), with ``kind`` "gluon" and
  ``input_layout`` "NCHW" when absent.
- 1: the current record.
A newer version than this tlkit knows is refused by `tlkit.model_io.read_meta` ("upgrade tlkit-core"). Evolution
rule: a key is only ever added, optional; changing a key's meaning needs a new version and an upgrade step in
`ModelMeta.from_dict`.

Inside the running code the record travels as the plain dict (`ModelMeta.to_dict()`), since task plugins build
and extend it as one (`TaskSpec.build_model(meta: dict)`); `ModelMeta.of(meta)` gives the typed view of such a
dict.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tlkit.errors import ModelFileError

FORMAT = "tlkit-model"
FORMAT_VERSION = 1


class ModelMeta(BaseModel):
    """The meta.json record of a tlkit model file. Every key is optional: a partial record is valid."""

    model_config = ConfigDict(extra="allow")

    # -- the file ---------------------------------------------------------------------------------------------
    format: Literal["tlkit-model"] = Field(FORMAT, description="always 'tlkit-model'")
    format_version: int = Field(
        0, ge=0, description="version of the record (module doc); absent = 0, a file older than versioning"
    )
    tlkit_version: str | None = Field(None, description="tlkit-core version that wrote the file")
    kind: Literal["gluon", "graph"] = Field(
        "gluon",
        description="'gluon': params by structural name, the net rebuilt by TaskSpec.build_model(meta) from `build`; "
        "'graph': an MXNet symbol graph (symbol.json), loaded as a SymbolBlock (pruned and QAT models)",
    )

    # -- what the model is ------------------------------------------------------------------------------------
    task: str | None = Field(None, description="the task plugin's name: classification, detection, pose, ...")
    arch: str | None = Field(None, description="architecture name shown to users (resnet18, ssd_mobilenet, ...)")
    classes: list[str] = Field(default_factory=list, description="class names, in output order")
    input_shape: list[int] | None = Field(None, description="network input [C, H, W]")
    input_layout: str = Field("NCHW", description="layout of the input tensor")
    preprocessing: dict[str, Any] = Field(
        default_factory=dict, description="resolved input normalisation (tlkit.export.preprocess.resolve_preprocessing)"
    )
    build: dict[str, Any] = Field(
        default_factory=dict, description="the task's constructor arguments: what TaskSpec.build_model rebuilds from"
    )

    # -- outputs and post-processing --------------------------------------------------------------------------
    output_names: list[str] | None = Field(
        None, description="ONNX output names of a multi-output model (default ['output'])"
    )
    output: str | None = Field(None, description="classification: what the output is ('logits')")
    output_activation: str | None = Field(
        None, description="'softmax' when the graph already ends in one (exports then add none)"
    )
    postprocessing: dict[str, Any] = Field(
        default_factory=dict,
        description="the task's post-processing parameters (detection: per class; pose: stride and inference)",
    )
    deepstream: dict[str, Any] = Field(
        default_factory=dict,
        description="nvinfer settings of the task: network_type, properties (tlkit.export.deploy)",
    )

    # -- pruning and quantization -----------------------------------------------------------------------------
    prune_exclude: list[str] = Field(
        default_factory=list, description="graph nodes the pruner never changes (the heads: class / box outputs)"
    )
    pruned: bool | None = Field(None, description="written by `prune`: the model is a pruned graph")
    pruned_from: str | None = Field(None, description="written by `prune`: the model file it was pruned from")
    pruning: dict[str, Any] | None = Field(None, description="written by `prune`: the pruning report's summary")
    qat: dict[str, Any] | None = Field(
        None, description="a quantization-aware-trained graph: what was quantized (tlkit.qat.qat_meta)"
    )

    # -- training ---------------------------------------------------------------------------------------------
    epoch: int | None = Field(None, description="epochs trained (checkpoints: the checkpoint's epoch)")
    metrics: dict[str, Any] | None = Field(None, description="the final model's last validation metrics")
    train_state: dict[str, Any] | None = Field(
        None, description="checkpoints only: what a resumed run needs (tlkit.training.checkpoints)"
    )
    bn_reestimation: dict[str, Any] | None = Field(
        None, description="retrain: batch-norm re-estimation images and validation rows (tlkit.training.retrain)"
    )
    card: dict[str, Any] | None = Field(None, description="the model card (tlkit.model_card.ModelCard.to_dict())")
    source_model: str | None = Field(None, description="the model file an export or derived model came from")

    # -- task-specific keys (documented here so every reader finds them) --------------------------------------
    detector: str | None = Field(
        None, description="detection: the detector family ('detectnet_v2' when absent, 'ssd', 'yolov3')"
    )
    export_nms: dict[str, Any] | None = Field(
        None, description="detection (GluonCV detectors): the NMS an ONNX export puts in its graph (tlkit.export.nms)"
    )
    stride: int | None = Field(None, description="detection (DetectNet_v2): output stride of the coverage grid")
    bbox_norm: list[float] | None = Field(None, description="detection (DetectNet_v2): box normalisation (x, y)")
    bbox_offset: float | None = Field(None, description="detection (DetectNet_v2): grid-cell centre offset")
    sdk_compatible: dict[str, Any] | None = Field(
        None, description="pose: an export for DeepStream's bodypose2d app (its upsample ratio)"
    )

    @field_validator("input_shape")
    @classmethod
    def _chw(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 3 or min(v) < 1):
            raise ValueError("expected [C, H, W], three positive integers")
        return v

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model") -> ModelMeta:
        """Validate `data` (old versions upgraded, see the module doc). A bad value is a `ModelFileError` naming
        `source` and the key."""
        if not isinstance(data, dict):
            raise ModelFileError(f"{source}: meta.json holds {type(data).__name__}, expected an object")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            got = first.get("input")
            msg = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
            raise ModelFileError(f"{source}: meta.json key {key!r}: {msg} (got {got!r})") from None

    @classmethod
    def of(cls, meta: dict[str, Any]) -> ModelMeta:
        """The typed view of an in-memory meta dict (may be partial)."""
        return cls.from_dict(meta, "meta")

    def to_dict(self) -> dict[str, Any]:
        """The keys that were given (defaults are not written out), extra keys included: what meta.json holds."""
        return self.model_dump(exclude_unset=True)
