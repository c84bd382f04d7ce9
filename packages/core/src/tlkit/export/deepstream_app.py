"""A complete deepstream-app config for a detector -> classifier cascade from two exported models:

    deepstream_app_config.txt       [application] [tiled-display] [source0] [streammux] [primary-gie]
                                    [tracker] [secondary-gie0] [osd] [sink0] [tests]
    config_infer_primary.txt        nvinfer, the detector on full frames (gie-unique-id 1)
    config_infer_secondary.txt      nvinfer, the classifier on the detector's objects (process-mode 2)
    labels_primary.txt, labels_secondary.txt

Run it with `deepstream-app -c deepstream_app_config.txt` (paths are relative to the config files). The
tracker is DeepStream's NvMultiObjectTracker with the IOU config its samples ship; the sink writes an
annotated mp4 (or nothing: `sink="fake"`). What nvinfer cannot do is said in the configs' comments (a
classifier crop widened by a margin; a custom bbox parser to build).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from tlkit.errors import SpecError
from tlkit.export.deploy import SecondaryGie, _fmt, _meta_for, network_type, write_deepstream_config
from tlkit.io import atomic_write_text

DS_ROOT = "/opt/nvidia/deepstream/deepstream"
TRACKER_LIB = f"{DS_ROOT}/lib/libnvds_nvmultiobjecttracker.so"
TRACKER_CONFIG = f"{DS_ROOT}/samples/configs/deepstream-app/config_tracker_IOU.yml"
SINKS = {"file": 3, "fake": 1, "display": 2}  # deepstream-app sink types (3 = encode + file, 1 = fakesink, 2 = EGL)


def write_deepstream_app(
    primary: str | os.PathLike,
    secondary: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    source_uri: str = f"file://{DS_ROOT}/samples/streams/sample_720p.mp4",
    secondary_gie: SecondaryGie | None = None,
    classifier_threshold: float = 0.5,
    batch_size: int = 1,
    width: int = 1280,
    height: int = 720,
    tracker: bool = True,
    sink: str = "file",
    output_file: str = "cascade_out.mp4",
    primary_int8_calib_file: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Write the deepstream-app config of the cascade and both nvinfer configs to `out_dir`.

    `primary` is an exported detector (network type 0), `secondary` an exported classifier (type 1).
    Returns {"app": ..., "primary": ..., "secondary": ...}. Without a tracker, the classifier attaches its
    results in the same frame (classifier-async-mode needs tracker ids)."""
    primary, secondary, out_dir = Path(primary), Path(secondary), Path(out_dir)
    pmeta, smeta = _meta_for(primary, None), _meta_for(secondary, None)
    if network_type(pmeta) != 0:
        raise SpecError(
            f"{primary}: the primary GIE of a cascade must be a detector (network-type 0); this model "
            f"is {network_type(pmeta)} ({pmeta.get('task')})"
        )
    if network_type(smeta) != 1:
        raise SpecError(
            f"{secondary}: the secondary GIE must be a classifier (network-type 1); this model is "
            f"{network_type(smeta)} ({smeta.get('task')})"
        )
    if sink not in SINKS:
        raise SpecError(f"sink {sink!r} is not one of {', '.join(SINKS)}")
    sgie = secondary_gie or SecondaryGie()
    if not tracker and sgie.classifier_async_mode:
        sgie = dataclasses.replace(sgie, classifier_async_mode=False)
    pcfg = write_deepstream_config(
        primary,
        pmeta,
        out_dir,
        batch_size=batch_size,
        config_name="config_infer_primary.txt",
        labels_name="labels_primary.txt",
        int8_calib_file=primary_int8_calib_file,
        gie_unique_id=sgie.operate_on_gie_id,
    )
    scfg = write_deepstream_config(
        secondary,
        smeta,
        out_dir,
        batch_size=max(batch_size, 16),
        config_name="config_infer_secondary.txt",
        labels_name="labels_secondary.txt",
        secondary=sgie,
        classifier_threshold=classifier_threshold,
    )

    groups: list[tuple[str, dict[str, Any]]] = [
        ("application", {"enable-perf-measurement": 1, "perf-measurement-interval-sec": 5}),
        ("tiled-display", {"enable": 0, "rows": 1, "columns": 1, "width": width, "height": height}),
        ("source0", {"enable": 1, "type": 3, "uri": source_uri, "num-sources": 1, "gpu-id": 0}),
        (
            "streammux",
            {
                "gpu-id": 0,
                "live-source": 0,
                "batch-size": batch_size,
                "batched-push-timeout": 40000,
                "width": width,
                "height": height,
                "enable-padding": 0,
            },
        ),
        (
            "primary-gie",
            {
                "enable": 1,
                "gpu-id": 0,
                "batch-size": batch_size,
                "gie-unique-id": sgie.operate_on_gie_id,
                "config-file": pcfg.name,
            },
        ),
    ]
    if tracker:
        groups.append(
            (
                "tracker",
                {
                    "enable": 1,
                    "tracker-width": 640,
                    "tracker-height": 384,
                    "gpu-id": 0,
                    "ll-lib-file": TRACKER_LIB,
                    "ll-config-file": TRACKER_CONFIG,
                    "display-tracking-id": 1,
                },
            )
        )
    sec: dict[str, Any] = {
        "enable": 1,
        "gpu-id": 0,
        "batch-size": max(batch_size, 16),
        "gie-unique-id": sgie.gie_unique_id,
        "operate-on-gie-id": sgie.operate_on_gie_id,
    }
    if sgie.operate_on_class_ids:
        sec["operate-on-class-ids"] = list(sgie.operate_on_class_ids)
    sec["config-file"] = scfg.name
    groups += [
        ("secondary-gie0", sec),
        (
            "osd",
            {
                "enable": 1,
                "gpu-id": 0,
                "border-width": 2,
                "text-size": 12,
                "text-color": [1, 1, 1, 1],
                "text-bg-color": [0.3, 0.3, 0.3, 1],
                "font": "Serif",
                "show-clock": 0,
            },
        ),
        (
            "sink0",
            {
                "enable": 1,
                "type": SINKS[sink],
                "sync": 0,
                "source-id": 0,
                "gpu-id": 0,
                **(
                    {"container": 1, "codec": 1, "bitrate": 4000000, "output-file": output_file}
                    if sink == "file"
                    else {}
                ),
            },
        ),
        ("tests", {"file-loop": 0}),
    ]
    head = pcfg.read_text().splitlines()[0]
    lines = [
        "# deepstream-app config written by tlkit: detector -> tracker -> classifier cascade.",
        "# Run: deepstream-app -c " + "deepstream_app_config.txt",
        "# Primary: " + head.removeprefix("# "),
    ]
    for name, values in groups:
        lines += ["", f"[{name}]"] + [f"{k}={_fmt(v)}" for k, v in values.items()]
    app = out_dir / "deepstream_app_config.txt"
    atomic_write_text(app, "\n".join(lines) + "\n")
    return {"app": app, "primary": pcfg, "secondary": scfg}
