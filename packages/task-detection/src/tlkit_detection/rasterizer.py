"""DetectNet_v2 ground-truth rasterizer: boxes -> coverage, bbox-distance and cov_norm targets.

Follows TLT's `BboxRasterizer.bbox_from_rumpy_params` and its `rasterize_bbox` kernel, in numpy:

* Boxes are scaled to the output grid (input size / stride). Coverage ellipse centred at
  `cov_center` of the box with radii `cov_radius * half size`, floored at 0.1 cell and then at
  `bbox_min_radius` (keeping the aspect ratio). Deadzone radii `(1-d)*cov_r + d*half_size`, >= cov_r.
* Cell (x, y) covers [x, x+1) x [y, y+1); coverage and deadzone are the fractions of 4x4 sub-samples
  inside each ellipse.
* Per class, boxes are drawn back to front, sorted by ymax. A box's deadzone clears a cell (coverage
  and targets to 0) when its deadzone fraction >= the coverage seen so far; its coverage replaces the
  cell when >= that maximum.
* Targets written into a covered cell: cov = coverage; bbox = distances (input pixels) from the cell's
  grid point gx = x*stride_x + offset to the left/top/right/bottom edges, divided by `scale`, evaluated
  at the cell's integer corner (as the kernel does); cov_norm = coverage / max(4*cov_rx*cov_ry, 1).

`decode` in `tlkit_detection.clustering` inverts the bbox encoding exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SUBSAMPLES = 4  # 4x4 super-sampling per cell
BBOX_SCALE = 35.0
BBOX_OFFSET = 0.5


@dataclass(frozen=True)
class ClassRasterParams:
    """Per-class coverage shape (TLT bbox_rasterizer_config.target_class_config)."""

    cov_center_x: float = 0.5
    cov_center_y: float = 0.5
    cov_radius_x: float = 0.4
    cov_radius_y: float = 0.4
    bbox_min_radius: float = 1.0


@dataclass
class RasterTargets:
    cov: np.ndarray  # (C, h, w)
    bbox: np.ndarray  # (4C, h, w): per class L, T, R, B
    cov_norm: np.ndarray  # (C, h, w)


def ellipse_params(box_out: np.ndarray, p: ClassRasterParams, deadzone_radius: float):
    """(cx, cy, cov_rx, cov_ry, dz_rx, dz_ry, inv_area) for one box in output-grid coordinates."""
    xmin, ymin, xmax, ymax = (float(v) for v in box_out)
    cx = xmin + p.cov_center_x * (xmax - xmin)
    cy = ymin + p.cov_center_y * (ymax - ymin)
    # distance to the nearer edge, so the ellipse stays inside the box
    sx = cx - xmin if p.cov_center_x < 0.5 else xmax - cx
    sy = cy - ymin if p.cov_center_y < 0.5 else ymax - cy
    csx = max(p.cov_radius_x * sx, 0.1)
    csy = max(p.cov_radius_y * sy, 0.1)
    mr = p.bbox_min_radius
    if csx < mr:  # raise x to the floor, keeping the aspect ratio
        csx, csy = mr, mr * csy / csx
    if csy < mr:
        csx, csy = mr * csx / csy, mr
    dsx = max((1.0 - deadzone_radius) * csx + deadzone_radius * sx, csx)
    dsy = max((1.0 - deadzone_radius) * csy + deadzone_radius * sy, csy)
    inv_area = 1.0 / max(csx * csy * 4.0, 1.0)
    return cx, cy, csx, csy, dsx, dsy, inv_area


def rasterize(
    boxes: np.ndarray,
    class_ids: np.ndarray,
    num_classes: int,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    class_params: Sequence[ClassRasterParams] | Mapping[int, ClassRasterParams] | None = None,
    deadzone_radius: float = 0.67,
    scale: float = BBOX_SCALE,
    offset: float = BBOX_OFFSET,
) -> RasterTargets:
    """Rasterize one image's boxes (N, 4) x1 y1 x2 y2 in input pixels, with class ids in [0, C).

    `input_size` and `output_size` are (width, height). Boxes with a class id outside [0, C) are skipped
    (the reader already maps unknown classes away).
    """
    in_w, in_h = input_size
    out_w, out_h = output_size
    stride_x, stride_y = in_w / out_w, in_h / out_h
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    cov = np.zeros((num_classes, out_h, out_w), np.float32)
    bbox = np.zeros((num_classes, 4, out_h, out_w), np.float32)
    cov_norm = np.zeros((num_classes, out_h, out_w), np.float32)
    sub = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES  # sub-sample offsets inside a cell
    for c in range(num_classes):
        p = _params_for(class_params, c)
        idx = np.flatnonzero(class_ids == c)
        if idx.size == 0:
            continue
        idx = idx[np.argsort(boxes[idx, 3], kind="stable")]  # back to front by ymax
        max_cov = np.zeros((out_h, out_w), np.float64)
        for i in idx:
            b_in = boxes[i]
            b_out = b_in / [stride_x, stride_y, stride_x, stride_y]
            cx, cy, csx, csy, dsx, dsy, inv_area = ellipse_params(b_out, p, deadzone_radius)
            # cells that the deadzone ellipse can touch
            x0, x1 = max(int(np.floor(cx - dsx)), 0), min(int(np.ceil(cx + dsx)) + 1, out_w)
            y0, y1 = max(int(np.floor(cy - dsy)), 0), min(int(np.ceil(cy + dsy)) + 1, out_h)
            if x0 >= x1 or y0 >= y1:
                continue
            xs = np.arange(x0, x1, dtype=np.float64)
            ys = np.arange(y0, y1, dtype=np.float64)
            fx = (xs[:, None] + sub[None, :]).reshape(-1)  # (nx*S,)
            fy = (ys[:, None] + sub[None, :]).reshape(-1)  # (ny*S,)
            dx, dy = (fx - cx), (fy - cy)
            inside_cov = (dy[:, None] / csy) ** 2 + (dx[None, :] / csx) ** 2 < 1.0
            inside_dz = (dy[:, None] / dsy) ** 2 + (dx[None, :] / dsx) ** 2 < 1.0
            shape = (ys.size, SUBSAMPLES, xs.size, SUBSAMPLES)
            cfrac = inside_cov.reshape(shape).mean(axis=(1, 3))
            afrac = inside_dz.reshape(shape).mean(axis=(1, 3))
            region = (slice(y0, y1), slice(x0, x1))
            m = max_cov[region]
            clear = (afrac >= m) & (afrac > 0)
            m[clear] = 0.0
            cov[c][region][clear] = 0.0
            cov_norm[c][region][clear] = 0.0
            bbox[c][(slice(None),) + region][:, clear] = 0.0
            draw = (cfrac >= m) & (cfrac > 0)
            m[draw] = cfrac[draw]
            cov[c][region][draw] = cfrac[draw]
            cov_norm[c][region][draw] = (cfrac * inv_area)[draw]
            gx = xs[None, :] * stride_x + offset  # grid points of the cells, input pixels
            gy = ys[:, None] * stride_y + offset
            ltrb = np.stack(
                np.broadcast_arrays(
                    (gx - b_in[0]) / scale, (gy - b_in[1]) / scale, (b_in[2] - gx) / scale, (b_in[3] - gy) / scale
                )
            )
            bbox[c][(slice(None),) + region][:, draw] = ltrb[:, draw]
    return RasterTargets(cov=cov, bbox=bbox.reshape(num_classes * 4, out_h, out_w), cov_norm=cov_norm)


def _params_for(class_params, c: int) -> ClassRasterParams:
    if class_params is None:
        return ClassRasterParams()
    if isinstance(class_params, Mapping):
        return class_params.get(c, ClassRasterParams())
    return class_params[c]
