"""`tlkit <task> compress`: the prune -> retrain loop TLT's docs tell users to run by hand, automated.

    tlkit classification compress -e spec.yaml -m trained.tlk -r out --max_accuracy_drop 1.0 --target_ratio 0.1

1. The trained model's validation KPI (the task's `train` validation on the spec's validation data) is the
   baseline.
2. Steps k = 1..N prune the previous step's retrained model to a parameter ratio r_k of the original (a
   geometric sequence from 1 down to `--target_ratio`), then retrain it (`load_graph`: batch-norm
   re-estimation, the retrain learning-rate recipe and, unless `--no_distillation`, distillation from the
   original model) for `--retrain_epochs`, validating as the spec says (validation_period); the step's model
   is the epoch with the best validation KPI (a choice made on the validation split).
3. The smallest model whose KPI is at most `--max_accuracy_drop` points (of 100) below the baseline (and, when
   given, at most `--max_latency_ms` in onnxruntime at batch 1) is kept: `compressed.tlk`. A step over the
   accuracy budget ends the loop (smaller steps would start from a worse model).
4. compress.json / compress.csv / compress.md and compress.png (size, latency and accuracy per step).

Resumable: a finished step is recorded in compress.json and skipped; an interrupted retraining continues from
its checkpoint (the engine's resume). Each step's files stay in `step_k/` (pruned.tlk, the retraining run).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.errors import SpecError, TlkitError
from tlkit.io import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from tlkit.context import CommandContext

STATE = "compress.json"


def step_ratios(target: float, steps: int) -> list[float]:
    """Cumulative parameter ratios of the steps: geometric from 1 to `target` (target^(k/steps))."""
    if not 0 < target <= 1:
        raise SpecError(f"--target_ratio {target}: expected a parameter ratio in (0, 1]")
    if steps < 1:
        raise SpecError(f"--steps {steps}: expected at least 1")
    return [target ** (k / steps) for k in range(1, steps + 1)]


def points(value: float) -> float:
    """A KPI in [0, 1] (accuracy, mAP, AP) as points of 100; values above 1 are taken as percentages already."""
    return 100.0 * value if abs(value) <= 1.0 else value


def _ort_latency_ms(onnx_path: Path, input_shape: list[int], iters: int = 30) -> float:
    """Median batch-1 latency of an ONNX model in onnxruntime (CPU, default threads)."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(1, *input_shape)).astype(np.float32)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def _latency(model: Path, work: Path, console: Any) -> float:
    from tlkit.export.command import export_with_options
    from tlkit.model_io import read_meta

    try:
        onnx = export_with_options(model, work / (model.stem + ".onnx"), {})
        return _ort_latency_ms(onnx, list(read_meta(model)["input_shape"]))
    except Exception as err:  # noqa: BLE001 - latency is extra information: report it missing, go on
        console.print(f"[yellow]warning:[/] no latency for {model.name}: {str(err).splitlines()[0][:200]}")
        return float("nan")


def _params(model: Path) -> int:
    from tlkit.model_io import load_model

    return int(sum(math.prod(v.shape) for v in load_model(model).params.values()))


def _as_graph(model: Path, out: Path) -> Path:
    """The trained model as a graph model file (what load_graph retrains and validates)."""
    from tlkit.model_io import load_net, read_meta, save_net

    if read_meta(model).get("kind") == "graph":
        shutil.copyfile(model, out)
        return out
    net, meta = load_net(model)
    save_net(out, net, {k: v for k, v in meta.items() if k not in ("epoch", "metrics", "train_state")}, as_graph=True)
    return out


def _step_config(cfg: Any, model: Path, epochs: int, teacher: Path | None) -> Any:
    tc = cfg.train_config
    tc = tc.model_copy(
        update={
            "pretrained_model_path": str(model),
            "load_graph": True,
            "n_epochs": epochs,
            "distillation": tc.distillation.model_copy(update={"teacher": str(teacher) if teacher else None}),
        }
    )
    return cfg.model_copy(update={"train_config": tc})


def run(ctx: CommandContext) -> dict[str, Any]:
    """The generic `tlkit <task> compress` command (options: tlkit.cli.options.COMPRESS_OPTIONS)."""
    from tlkit.cli.options import COMPRESS_OPTIONS, with_defaults
    from tlkit.lazy import resolve
    from tlkit.pruning.command import prune_kwargs, prune_model_file
    from tlkit.registry import get_registry
    from tlkit.training import train
    from tlkit.training.status import StatusLogger

    if ctx.model is None:
        raise TlkitError(f"tlkit {ctx.task} compress: -m/--model (the trained model to compress) is required")
    if ctx.spec is None:
        raise TlkitError(
            f"tlkit {ctx.task} compress: -e/--experiment_spec (training and validation data, recipe) is required"
        )
    task = get_registry().task(ctx.task)
    if task.train_job is None:
        raise TlkitError(f"tlkit {ctx.task} compress: task {ctx.task!r} cannot build a training job (no train_job)")
    build_job = resolve(task.train_job)
    console, R = ctx.console, ctx.require_results_dir()
    original = Path(ctx.model)
    # callers other than the CLI may leave options out: the COMPRESS_OPTIONS defaults apply
    option = with_defaults(COMPRESS_OPTIONS, ctx.options)
    max_drop = float(option["max_accuracy_drop"])
    max_latency = option["max_latency_ms"]
    ratios = step_ratios(float(option["target_ratio"]), int(option["steps"]))
    # None (the default): the spec's epoch count
    epochs = int(option["retrain_epochs"] if option["retrain_epochs"] is not None else ctx.spec.train_config.n_epochs)
    teacher = None if option["no_distillation"] else original
    measure_latency = not option["no_latency"]
    prune_opts = prune_kwargs({k: v for k, v in ctx.options.items() if k != "target_ratio"})
    devices = ctx.contexts()
    status = StatusLogger(R)

    state_path = R / STATE
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state and state.get("model") != str(original.resolve()):
        raise TlkitError(f"{state_path}: a compress run of {state.get('model')}; use a new results dir for {original}")
    state.update(
        model=str(original.resolve()),
        max_accuracy_drop=max_drop,
        ratios=ratios,
        retrain_epochs=epochs,
        distillation=teacher is not None,
        prune_options=prune_opts,
    )
    steps: list[dict] = state.setdefault("steps", [])

    def save_state() -> None:
        atomic_write_text(state_path, json.dumps(state, indent=1, default=str) + "\n")

    status.write(
        "STARTED", f"Compressing {original}: steps to parameter ratios {', '.join(f'{r:.3g}' for r in ratios)}"
    )
    # -- step 0: the baseline
    if not steps:
        base_graph = _as_graph(original, R / "original_graph.tlk")
        job = build_job(_step_config(ctx.spec, base_graph, epochs, None), R / "step_0", console, devices)
        if job.validate is None or not job.kpi:
            raise SpecError(
                f"tlkit {ctx.task} compress: the spec has no validation data; compress compares validation KPIs"
            )
        metrics = {k: float(v) for k, v in job.validate(job.net, devices).items()}
        steps.append(
            {
                "step": 0,
                "model": str(original),
                "target_ratio": 1.0,
                "params": _params(original),
                "kpi": job.kpi,
                "kpi_value": metrics[job.kpi],
                "metrics": metrics,
                "latency_ms": _latency(base_graph, R, console) if measure_latency else float("nan"),
                "within_budget": True,
            }
        )
        save_state()
        console.print(f"baseline: {job.kpi} {metrics[job.kpi]:.4f}, {steps[0]['params']:,} parameters")
    base = steps[0]
    kpi = base["kpi"]

    # -- steps 1..N
    stop = any(not s["within_budget"] for s in steps[1:])
    for k, ratio in enumerate(ratios, start=1):
        if stop:
            break
        if k < len(steps):
            continue  # done in an earlier run
        prev = steps[-1]
        src = Path(prev["model"])
        d = R / f"step_{k}"
        d.mkdir(parents=True, exist_ok=True)
        pruned = d / "pruned.tlk"
        console.rule(
            f"step {k}/{len(ratios)}: prune to {ratio:.3g} of the original parameters, retrain {epochs} epochs"
        )
        status.write("RUNNING", f"step {k}: pruning {src.name} to ratio {ratio:.4g}")
        relative = min(1.0, ratio * base["params"] / prev["params"])
        report = prune_model_file(src, pruned, pruner=option["pruner"], target_ratio=relative, **prune_opts)
        step_cfg = _step_config(ctx.spec, pruned, epochs, teacher)
        job = build_job(step_cfg, d / "retrain", console, devices)
        t = time.perf_counter()
        res = train(job, step_cfg.train_config, d / "retrain", devices, console)
        # the step's model: the epoch with the best validation KPI (weights/model_best.tlk), else the last one
        model = Path(res.best_model_path or res.model_path)
        scored = [r for r in res.history if not r.get("stage") and kpi in r]
        best_row = max(scored, key=lambda r: r[kpi]) if res.best_model_path and scored else None
        value = float(best_row[kpi] if best_row else res.final_metrics[kpi])
        start = {r["stage"]: r.get(kpi) for r in res.history if r.get("stage")}
        rec = {
            "step": k,
            "model": str(model),
            "pruned": str(pruned),
            "target_ratio": ratio,
            "params": report.params_after,
            "flops_ratio": report.flops_ratio * prev.get("flops_ratio_total", 1.0),
            "kpi": kpi,
            "kpi_value": value,
            "kpi_after_prune": start.get("pruned"),
            "kpi_after_bn": start.get("bn_reestimated"),
            "metrics": {m: v for m, v in (best_row or res.final_metrics).items() if isinstance(v, float)},
            "best_epoch": best_row["epoch"] if best_row else res.epochs_run,
            "epochs": [{"epoch": r["epoch"], kpi: r.get(kpi)} for r in res.history if not r.get("stage")],
            "retrain_s": time.perf_counter() - t,
            "teacher_s": sum(r.get("teacher_s", 0.0) for r in res.history),
            "latency_ms": _latency(model, d, console) if measure_latency else float("nan"),
        }
        rec["flops_ratio_total"] = rec["flops_ratio"]
        rec["drop_points"] = points(base["kpi_value"]) - points(value)
        rec["within_budget"] = rec["drop_points"] <= max_drop and (
            max_latency is None or rec["latency_ms"] <= max_latency or math.isnan(rec["latency_ms"])
        )
        steps.append(rec)
        save_state()
        console.print(
            f"step {k}: {rec['params']:,} parameters ({rec['params'] / base['params']:.3f}), {kpi} {value:.4f} "
            f"({rec['drop_points']:+.2f} points from the baseline){'' if rec['within_budget'] else ': over the budget'}"
        )
        stop = not rec["within_budget"] and rec["drop_points"] > max_drop

    kept = [s for s in steps[1:] if s["within_budget"]]
    best = min(kept, key=lambda s: s["params"]) if kept else None
    out = Path(ctx.output) if ctx.output else R / "compressed.tlk"
    if best is not None:
        shutil.copyfile(best["model"], out)
    state["kept_step"] = best["step"] if best else None
    state["output"] = str(out) if best else None
    save_state()
    write_report(state, R)
    console.print(report_table(state))
    if best is None:
        msg = f"No step stayed within {max_drop} points of the baseline {kpi}; nothing written (try more --retrain_epochs or a larger --target_ratio)"
        console.print(msg)
        status.write("SUCCESS", msg, kpi={kpi: base["kpi_value"]})
        return {"kept_step": None, "report": str(R / "compress.md")}
    console.print(
        f"kept step {best['step']}: {out} ({best['params']:,} parameters, {kpi} {best['kpi_value']:.4f}); report {R / 'compress.md'}"
    )
    status.write(
        "SUCCESS",
        f"Compressed to {out}",
        kpi={kpi: best["kpi_value"], "param_count": best["params"], "pruning_ratio": best["params"] / base["params"]},
    )
    return {"model": str(out), "kept_step": best["step"], "report": str(R / "compress.md"), kpi: best["kpi_value"]}


# -- report ------------------------------------------------------------------------------------------------


def _rows(state: dict) -> list[list[str]]:
    base = state["steps"][0]
    rows = []
    for s in state["steps"]:
        fmt = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
        rows.append(
            [
                str(s["step"]),
                f"{s['params']:,}",
                f"{s['params'] / base['params']:.3f}",
                "" if math.isnan(s.get("latency_ms", float("nan"))) else f"{s['latency_ms']:.2f}",
                fmt(s.get("kpi_after_prune")),
                fmt(s.get("kpi_after_bn")),
                fmt(s["kpi_value"]),
                f"{s.get('drop_points', 0.0):+.2f}",
                ("kept" if s["step"] == state.get("kept_step") else ("yes" if s["within_budget"] else "no")),
            ]
        )
    return rows


_HEAD = [
    "step",
    "parameters",
    "ratio",
    "ORT b1 ms",
    "after prune",
    "after BN",
    "after retrain",
    "drop (points)",
    "within budget",
]


def report_table(state: dict) -> Any:
    from rich.table import Table

    t = Table(
        title=f"compress: validation {state['steps'][0]['kpi']} per step (budget {state['max_accuracy_drop']} points)"
    )
    for h in _HEAD:
        t.add_column(h, justify="left" if h == "step" else "right")
    for r in _rows(state):
        t.add_row(*r)
    return t


def markdown_table(state: dict) -> str:
    """The per-step table as Markdown."""
    return "\n".join(
        [
            "| " + " | ".join(_HEAD) + " |",
            "|" + "---|" * len(_HEAD),
            *["| " + " | ".join(r) + " |" for r in _rows(state)],
        ]
    )


def write_report(state: dict, R: Path) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(_HEAD)
    w.writerows(_rows(state))
    atomic_write_text(R / "compress.csv", buf.getvalue())
    base = state["steps"][0]
    lines = [
        "# tlkit compress",
        "",
        f"Model: {state['model']}  ",
        f"Baseline validation {base['kpi']}: {base['kpi_value']:.4f}; budget: at most {state['max_accuracy_drop']} points below  ",
        f"Steps to parameter ratios {', '.join(f'{r:.3g}' for r in state['ratios'])}, retrained {state['retrain_epochs']} "
        f"epochs each{' with distillation from the original model' if state['distillation'] else ''}  ",
        f"Kept: {'step ' + str(state['kept_step']) + ' -> ' + str(state['output']) if state.get('kept_step') else 'none'}",
        "",
        markdown_table(state),
        "",
        "![compress](compress.png)",
        "",
    ]
    atomic_write_text(R / "compress.md", "\n".join(lines))
    _plot(state, R / "compress.png")


def _plot(state: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = state["steps"]
    base = steps[0]
    x = [s["step"] for s in steps]
    fig = Figure(figsize=(12, 3.4), tight_layout=True)
    FigureCanvasAgg(fig)
    panels = [
        ("parameter ratio", [s["params"] / base["params"] for s in steps]),
        ("onnxruntime batch-1 latency (ms)", [s.get("latency_ms", float("nan")) for s in steps]),
        (f"validation {base['kpi']}", [s["kpi_value"] for s in steps]),
    ]
    for i, (title, vals) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.plot(x, vals, marker="o")
        if i == 2:
            floor = (points(base["kpi_value"]) - state["max_accuracy_drop"]) / (
                100.0 if abs(base["kpi_value"]) <= 1 else 1.0
            )
            ax.axhline(floor, color="red", linestyle="--", linewidth=1, label="budget")
            after_bn = [(s["step"], s["kpi_after_bn"]) for s in steps if s.get("kpi_after_bn") is not None]
            if after_bn:
                ax.plot(
                    [p[0] for p in after_bn], [p[1] for p in after_bn], "x", color="gray", label="before retraining"
                )
            ax.legend(fontsize=8)
        if state.get("kept_step") is not None:
            ax.axvline(state["kept_step"], color="green", alpha=0.3, linewidth=6)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
