"""Standard option sets, so every task spells a command's flags the same way (TLT's names).

A task's CommandSpec lists one of these (plus anything of its own)::

    CommandSpec("prune", run="tlkit.pruning.command:run", options=PRUNE_OPTIONS, stage=Stage.PRUNE)

Common flags every command gets (not listed here): -e/--experiment_spec, -r/--results_dir, -m/--model,
-o/--output, -k/--key, --gpus, --gpu_index, --use_amp, and trailing key=value spec overrides; train commands
(stage TRAIN) also get --restart.
Values arrive in `CommandContext.options` under each OptionSpec's `name`; read them with `ctx.option(name)`,
which falls back on the OptionSpec's default, so each default is written once, here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tlkit.types import OptionSpec


def with_defaults(specs: Iterable[OptionSpec], given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` with every option of `specs` that is missing (or None) set to its OptionSpec default; other keys
    are kept. For APIs that take an options dict (an exporter's `export(model, output, options)`)."""
    out = {o.name: o.default for o in specs}
    out.update((k, v) for k, v in given.items() if v is not None)
    return out


PRUNE_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "pruner",
        ("--pruner",),
        str,
        "l2",
        "the pruning method: a registered pruner (`tlkit plugins` lists them); l2 = TLT's filter-norm pruning",
    ),
    OptionSpec("normalizer", ("-n", "--normalizer"), str, "max", "per-layer norm normalizer", choices=("max", "L2")),
    OptionSpec(
        "equalization_criterion",
        ("-eq", "--equalization_criterion"),
        str,
        "union",
        "how coupled layers (residual adds, depthwise) merge their filter norms",
        choices=("union", "intersection", "arithmetic_mean", "geometric_mean"),
    ),
    OptionSpec(
        "pruning_granularity", ("-pg", "--pruning_granularity"), int, 8, "kept filters are a multiple of this", min=1
    ),
    OptionSpec(
        "pruning_threshold",
        ("-pth", "--pruning_threshold"),
        float,
        0.1,
        "threshold on the normalized filter norm, in [0, 1)",
        min=0,
    ),
    OptionSpec(
        "min_num_filters", ("-nf", "--min_num_filters"), int, 16, "keep at least this many filters per layer", min=0
    ),
    OptionSpec("excluded_layers", ("-el", "--excluded_layers"), str, (), "layers never pruned", multiple=True),
    OptionSpec(
        "target_ratio",
        ("--target_ratio",),
        float,
        None,
        "prune to at most this parameter ratio (pruned/original, e.g. 0.25 = 4x smaller); overrides -pth",
        min=0,
        max=1,
    ),
    OptionSpec(
        "target_flops",
        ("--target_flops",),
        float,
        None,
        "prune to at most this many FLOPs (batch 1): a ratio of the original when <= 1 (0.3 = 3.3x fewer), "
        "else an absolute count (e.g. 2e8); overrides -pth",
    ),
    OptionSpec(
        "target_macs",
        ("--target_macs",),
        float,
        None,
        "the same budget in multiply-accumulates (1 MAC = 2 FLOPs): a ratio when <= 1, else a count (e.g. 1e8)",
    ),
    OptionSpec(
        "allocation",
        ("--allocation",),
        str,
        "threshold",
        "how many channels each layer keeps: threshold (TLT: normalized norm > -pth), uniform (the same fraction "
        "of every layer: MACs fall as fast as parameters; needs a target) or global (one threshold on norms "
        "relative to their layer's mean)",
        choices=("threshold", "uniform", "global"),
    ),
    OptionSpec(
        "min_channel_ratio",
        ("--min_channel_ratio",),
        float,
        0.125,
        "every layer keeps at least this fraction of its channels (0 = TLT exactly: only -nf)",
    ),
)

# compress = prune steps + retraining: the pruning flags that shape each step, plus the loop's own
COMPRESS_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "max_accuracy_drop",
        ("--max_accuracy_drop",),
        float,
        1.0,
        "keep models at most this many points (of 100) below the trained model's validation KPI",
    ),
    OptionSpec("target_ratio", ("--target_ratio",), float, 0.1, "the smallest parameter ratio tried (the last step)"),
    OptionSpec("steps", ("--steps",), int, 3, "pruning steps from 1 down to --target_ratio (geometric)"),
    OptionSpec(
        "retrain_epochs",
        ("--retrain_epochs",),
        int,
        None,
        "retraining epochs per step (default: train_config.n_epochs)",
    ),
    OptionSpec(
        "max_latency_ms",
        ("--max_latency_ms",),
        float,
        None,
        "also require at most this onnxruntime batch-1 latency (ms)",
    ),
    OptionSpec(
        "no_distillation", ("--no_distillation",), bool, False, "retrain without distillation from the trained model"
    ),
    OptionSpec("no_latency", ("--no_latency",), bool, False, "do not export and time each step in onnxruntime"),
    *(
        o
        for o in PRUNE_OPTIONS
        if o.name
        in (
            "pruner",
            "allocation",
            "min_channel_ratio",
            "pruning_granularity",
            "min_num_filters",
            "normalizer",
            "equalization_criterion",
            "excluded_layers",
        )
    ),
)

# How a secondary classifier picks and labels a detector's objects: the same flags (and meaning) for the DeepStream
# secondary-GIE config export writes and for the Python cascade (`detection inference --secondary`).
SECONDARY_FILTERS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "classifier_threshold",
        ("--classifier_threshold",),
        float,
        0.5,
        "classifier: attach a label only at this probability or above (DeepStream classifier-threshold)",
    ),
    OptionSpec(
        "operate_on_class_ids",
        ("--operate_on_class_ids",),
        str,
        None,
        "secondary classifier: the detector's class ids to classify, e.g. '0;2' (default: all)",
    ),
    OptionSpec(
        "input_object_min_width",
        ("--input_object_min_width",),
        int,
        16,
        "secondary classifier: skip narrower objects (px)",
    ),
    OptionSpec(
        "input_object_min_height",
        ("--input_object_min_height",),
        int,
        16,
        "secondary classifier: skip shorter objects (px)",
    ),
)

EXPORT_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "format",
        ("--format",),
        str,
        "onnx",
        "the exporter: a registered export format (`tlkit plugins` lists them); onnx writes ONNX",
    ),
    OptionSpec(
        "opset", ("--opset", "--target_opset"), int, None, "ONNX opset to stamp (default: the exporter's)", min=7
    ),
    OptionSpec(
        "static_batch_size",
        ("--static_batch_size",),
        int,
        -1,
        "fixed batch size; -1 = dynamic batch",
        min=1,
        special=(-1,),
    ),
    OptionSpec(
        "data_type", ("--data_type",), str, "fp32", "fp32, fp16 or int8 (Q/DQ)", choices=("fp32", "fp16", "int8")
    ),
    OptionSpec("cal_data_file", ("--cal_data_file",), Path, None, "calibration tensorfile (HDF5) for int8"),
    OptionSpec("cal_image_dir", ("--cal_image_dir",), Path, None, "calibrate int8 from these images instead"),
    OptionSpec(
        "cal_cache_file", ("--cal_cache_file",), Path, None, "TensorRT calibration cache to write, or to import"
    ),
    OptionSpec("batches", ("--batches",), int, 10, "calibration batches", min=1),
    OptionSpec("batch_size", ("--batch_size",), int, 16, "calibration batch size", min=1),
    OptionSpec(
        "calibration_method",
        ("--calibration_method",),
        str,
        "entropy",
        "activation range method",
        choices=("entropy", "max", "percentile"),
    ),
    OptionSpec(
        "qdq_format",
        ("--qdq_format",),
        str,
        "tensorrt",
        "int8 Q/DQ layout: tensorrt (symmetric int8 activations, TensorRT >= 10) or onnxruntime (uint8 "
        "activations: fully fused int8 kernels on x86 CPUs; TensorRT rejects it)",
        choices=("tensorrt", "onnxruntime"),
    ),
    OptionSpec(
        "cal_json_file",
        ("--cal_json_file",),
        Path,
        None,
        "QAT models: also write the learned activation ranges as TAO's JSON ({tensor_scales: {tensor: amax}})",
    ),
    OptionSpec(
        "force_ptq",
        ("--force_ptq",),
        bool,
        False,
        "QAT models: calibrate (--cal_data_file / --cal_image_dir) instead of using the learned ranges",
    ),
    OptionSpec(
        "quantize_output_heads",
        ("--quantize_output_heads",),
        bool,
        False,
        "int8: quantize the output heads too (by default the last weighted layers and everything after them stay "
        "float: quantized logits/boxes get clipped to the calibrated range)",
    ),
    OptionSpec("gen_ds_config", ("--gen_ds_config",), bool, False, "also write a complete DeepStream nvinfer config"),
    *SECONDARY_FILTERS,
    OptionSpec(
        "ds_secondary",
        ("--ds_secondary",),
        bool,
        False,
        "DeepStream: write a secondary-GIE classifier config (process-mode 2, on a detector's objects)",
    ),
    OptionSpec(
        "operate_on_gie_id", ("--operate_on_gie_id",), int, 1, "--ds_secondary: the detector GIE to classify objects of"
    ),
    OptionSpec("gie_unique_id", ("--gie_unique_id",), int, None, "DeepStream gie-unique-id (default 1, secondary 2)"),
    OptionSpec(
        "classifier_async_mode",
        ("--classifier_async_mode",),
        int,
        1,
        "--ds_secondary: 1 = attach results asynchronously by tracker id (needs a tracker), 0 = in the same frame",
    ),
    OptionSpec("gen_triton_repo", ("--gen_triton_repo",), Path, None, "also write a Triton model repository here"),
    OptionSpec(
        "triton_platform",
        ("--triton_platform",),
        str,
        "onnxruntime_onnx",
        "--gen_triton_repo: onnxruntime_onnx (the ONNX) or tensorrt_plan (builds a TensorRT engine: tlkit-tensorrt)",
        choices=("onnxruntime_onnx", "tensorrt_plan"),
    ),
)

TRAIN_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "restart",
        ("--restart",),
        bool,
        False,
        "start over in a results dir that holds another run (other classes, another network): its weights/, "
        "training.csv, curves, events, spec and classmap move to <results_dir>/previous_runs/<date-time>/",
    ),
)

INFERENCE_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "image",
        ("-i", "--image"),
        Path,
        None,
        "the input: an image, a folder of images (sub-folders too), a .txt list of images (one path a "
        "line) or, where the task reads videos, a video",
    ),
    OptionSpec("image_dir", ("-d", "--image_dir"), Path, None, "the same as -i (TLT's flag for a folder)"),
    OptionSpec("batch_size", ("-b", "--batch_size"), int, 16, "inference batch size", min=1),
    OptionSpec(
        "strict", ("--strict",), bool, False, "stop at the first unreadable image instead of skipping and reporting it"
    ),
)

# A detector's inference with an exported classifier on its objects (the DeepStream primary + secondary cascade)
CASCADE_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "secondary",
        ("--secondary",),
        Path,
        None,
        "an exported classifier (.onnx, or an engine) to classify each detected object with",
    ),
    OptionSpec(
        "secondary_margin",
        ("--secondary_margin",),
        float,
        0.0,
        "widen each box by this fraction of its size per side before classifying (DeepStream cannot: 0 matches it)",
    ),
    *SECONDARY_FILTERS,
)

CALIBRATION_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("max_batches", ("--max_batches",), int, 1, "batches to dump; -1 = the whole set", min=1, special=(-1,)),
    OptionSpec("use_validation_set", ("--use_validation_set",), bool, False, "draw from the validation set"),
)
