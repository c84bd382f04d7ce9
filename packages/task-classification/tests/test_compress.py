"""Pruned models keep their accuracy: the retrain recipe (BN re-estimation, validation before training, the
retrain learning rates), distillation from the unpruned model, `prune -e` and the `compress` loop.

resnet10 at 32 px on generated shapes, 1-2 epochs: smoke runs; the checks are about what each stage reports
and writes, and about the numbers hanging together (accuracy is the acceptance runs' business)."""

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from tiny_recipe import ctx, spec

from tlkit.errors import SpecError
from tlkit.model_io import load_model


def ordered(params, suffix):
    """The arrays whose names end with `suffix`, in layer order (by the numbers in their names)."""
    import re

    keys = [k for k in params if k.endswith(suffix)]
    return [params[k].asnumpy() for k in sorted(keys, key=lambda k: [int(n) for n in re.findall(r"\d+", k)])]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes):
    """A trained model and its magnitude-pruned graph."""
    from tlkit.pruning.command import prune_model_file
    from tlkit_classification import train

    r = tmp_path_factory.mktemp("compress")
    model = Path(train.run(ctx("train", spec(shapes), results_dir=r / "train"))["model"])
    pruned = r / "pruned.tlk"
    prune_model_file(model, pruned, target_ratio=0.3, allocation="uniform", min_filters=8)
    return r, model, pruned


def test_retrain_starts_with_bn_reestimation_and_reports_it(trained, shapes):
    from tlkit_classification.train import train_model

    r, model, pruned = trained
    cfg = spec(
        shapes,
        f"train_config.pretrained_model_path={pruned}",
        "train_config.load_graph=true",
        "train_config.n_epochs=1",
        "train_config.retrain_config.lr_scale=0.5",
    )
    res = train_model(cfg, r / "retrain", Console(quiet=True), [__import__("mxnet").cpu()])
    stages = [row.get("stage") for row in res.history]
    assert stages[:2] == ["pruned", "bn_reestimated"] and stages[2] is None
    # validation before training is the pruned model file's accuracy on the validation set, as evaluate says
    from tlkit.model_io import read_meta
    from tlkit_classification.data import open_image_folder
    from tlkit_classification.evaluate import evaluate_model
    from tlkit_classification.runner import load_runner

    val = open_image_folder(shapes / "val", classes=read_meta(pruned)["classes"])
    assert res.history[0]["validation_accuracy"] == pytest.approx(evaluate_model(load_runner(pruned), val)["accuracy"])
    csv_text = (r / "retrain" / "training.csv").read_text()
    assert "stage" in csv_text.splitlines()[0] and "bn_reestimated" in csv_text
    # the retrain recipe: a one-epoch warm-up to lr_config's rate times lr_scale (constant 0.01 x 0.5)
    assert res.history[-1]["lr"] == pytest.approx(0.01 * 0.5)


def test_reestimate_bn_measures_the_data_statistics():
    import mxnet as mx
    from mxnet.gluon import nn

    from tlkit.training.retrain import reestimate_bn

    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 1, in_channels=3), nn.BatchNorm(in_channels=4, momentum=0.9))
    net.initialize(mx.init.One())
    net.hybridize()
    rng = np.random.default_rng(0)
    batches = [mx.nd.array(rng.normal(3.0, 2.0, (16, 3, 4, 4))) for _ in range(4)]
    n = reestimate_bn(net, batches, max_images=48)
    assert n == 48  # stops once it has seen max_images
    bn = net[1]
    # a 1x1 conv of ones sums the 3 channels: mean 9, variance 3 * 4 = 12, the same in every output channel
    seen = mx.nd.concat(*[net[0](b) for b in batches[:3]], dim=0).asnumpy()
    np.testing.assert_allclose(bn.running_mean.data().asnumpy(), seen.mean(axis=(0, 2, 3)), rtol=1e-3)
    np.testing.assert_allclose(bn.running_var.data().asnumpy(), 12.0, rtol=0.15)
    assert bn._kwargs["momentum"] == 0.9  # restored


def test_distillation_reports_the_teacher_and_checks_it(trained, shapes):
    import mxnet as mx

    from tlkit_classification.train import train_model

    r, model, pruned = trained
    cfg = spec(
        shapes,
        f"train_config.pretrained_model_path={pruned}",
        "train_config.load_graph=true",
        "train_config.n_epochs=1",
        f"train_config.distillation.teacher={model}",
        "train_config.distillation.temperature=4",
    )
    res = train_model(cfg, r / "distill", Console(quiet=True), [mx.cpu()])
    row = res.history[-1]
    assert row["teacher_s"] > 0 and 0 < row["teacher_share"] < 1 and row["teacher_ms_per_step"] > 0
    status = [json.loads(line) for line in (r / "distill" / "status.json").read_text().splitlines()]
    assert any("teacher_s" in s for s in status)
    # a teacher of another task (or other classes) is refused by name
    bad = spec(
        shapes,
        f"train_config.pretrained_model_path={pruned}",
        "train_config.load_graph=true",
        f"train_config.distillation.teacher={r / 'missing.tlk'}",
    )
    with pytest.raises(Exception, match="missing.tlk"):
        train_model(bad, r / "bad", Console(quiet=True), [mx.cpu()])


def test_soft_label_kl_is_zero_for_equal_logits_and_scales_with_t2():
    import mxnet as mx

    from tlkit.training.distill import soft_label_kl

    a = mx.nd.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    np.testing.assert_allclose(soft_label_kl(a, a, 2.0).asnumpy(), 0.0, atol=1e-6)
    b = mx.nd.array([[3.0, 2.0, 1.0], [5.0, 0.0, 0.0]])
    kl1 = soft_label_kl(a, b, 1.0).asnumpy()
    p = np.exp(b.asnumpy()) / np.exp(b.asnumpy()).sum(1, keepdims=True)
    q = np.exp(a.asnumpy()) / np.exp(a.asnumpy()).sum(1, keepdims=True)
    np.testing.assert_allclose(kl1, (p * np.log(p / q)).sum(1), rtol=1e-5)
    assert (soft_label_kl(a, b, 4.0).asnumpy() > 0).all()


def test_prune_with_spec_reestimates_bn_in_the_file(trained, shapes):
    from tlkit.pruning.command import run as prune_run

    r, model, _ = trained
    from tlkit.config import spec_to_yaml

    out = r / "pruned_bn.tlk"
    spec_file = r / "spec.yaml"  # `prune -e spec.yaml`, as the CLI passes it
    spec_file.write_text(spec_to_yaml(spec(shapes)))
    prune_run(
        ctx(
            "prune",
            spec(shapes),
            spec_path=spec_file,
            results_dir=r / "p",
            model=model,
            output=out,
            options={"target_ratio": 0.3, "allocation": "uniform", "min_num_filters": 8},
        )
    )
    mf = load_model(out)
    rows = mf.meta["bn_reestimation"]["validation"]
    assert [x["stage"] for x in rows] == ["pruned", "bn_reestimated"]
    plain = r / "pruned_plain.tlk"
    prune_run(
        ctx(
            "prune",
            results_dir=r / "p2",
            model=model,
            output=plain,
            options={"target_ratio": 0.3, "allocation": "uniform", "min_num_filters": 8},
        )
    )
    ref = load_model(plain).params
    # each prune rebuilds the gluon net, so layer names carry other counters: compare in layer order
    means = list(zip(ordered(ref, "running_mean"), ordered(mf.params, "running_mean")))
    assert means and any(not np.allclose(a, b) for a, b in means)
    weights = list(zip(ordered(ref, "weight"), ordered(mf.params, "weight")))
    assert weights and all(np.array_equal(a, b) for a, b in weights)  # only the statistics change


def test_compress_keeps_the_smallest_within_budget_and_resumes(trained, shapes):
    from tlkit.compress import run as compress_run

    r, model, _ = trained
    d = r / "c"
    opts = {
        "max_accuracy_drop": 100.0,
        "target_ratio": 0.25,
        "steps": 2,
        "retrain_epochs": 1,
        "allocation": "uniform",
        "min_num_filters": 8,
    }
    out = compress_run(ctx("compress", spec(shapes), results_dir=d, model=model, options=dict(opts)))
    state = json.loads((d / "compress.json").read_text())
    steps = state["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    base = steps[0]["params"]
    assert steps[1]["params"] <= 0.5 * base + 1 and steps[2]["params"] <= 0.25 * base
    assert out["kept_step"] == 2 and Path(out["model"]).is_file()  # a 100-point budget keeps the smallest
    assert steps[2]["kpi_after_bn"] is not None and steps[2]["latency_ms"] > 0
    assert (d / "compress.png").read_bytes()[:4] == b"\x89PNG"
    md = (d / "compress.md").read_text()
    assert f"{steps[2]['params']:,}" in md and "kept" in md
    # resumable: a second run finds every step done and retrains nothing
    mtime = (d / "step_1" / "retrain" / "weights" / "model.tlk").stat().st_mtime
    again = compress_run(ctx("compress", spec(shapes), results_dir=d, model=model, options=dict(opts)))
    assert again["kept_step"] == 2
    assert (d / "step_1" / "retrain" / "weights" / "model.tlk").stat().st_mtime == mtime
    # a budget nothing meets: the loop stops after the first step over it and keeps nothing
    tight = compress_run(
        ctx(
            "compress",
            spec(shapes),
            results_dir=r / "tight",
            model=model,
            options={**opts, "max_accuracy_drop": -100.0, "no_latency": True},
        )
    )
    assert tight["kept_step"] is None
    assert len(json.loads((r / "tight" / "compress.json").read_text())["steps"]) == 2


def test_compress_needs_validation_data(trained, shapes):
    from tlkit.compress import run as compress_run

    r, model, _ = trained
    cfg = spec(shapes, "dataset_config.val_dataset_path=null")
    with pytest.raises(SpecError, match="validation"):
        compress_run(ctx("compress", cfg, results_dir=r / "noval", model=model, options={"retrain_epochs": 1}))


def test_prune_and_compress_through_the_cli(trained, tmp_path):
    from tlkit.testing.plugins import run_tlkit

    r, model, _ = trained
    out = tmp_path / "p.tlk"
    p = run_tlkit(
        [
            "classification",
            "prune",
            "-m",
            str(model),
            "-o",
            str(out),
            "--allocation",
            "global",
            "--target_macs",
            "0.4",
            "--min_channel_ratio",
            "0.25",
            "-nf",
            "8",
        ]
    )
    assert p.returncode == 0, p.stderr
    summary = load_model(out).meta["pruning"]
    assert summary["flops_after"] <= 0.4 * summary["flops_before"]
    assert summary["options"]["allocation"] == "global" and summary["options"]["min_channel_ratio"] == 0.25
    p = run_tlkit(["classification", "prune", "-m", str(model), "-o", str(out), "--allocation", "uniform"])
    assert p.returncode != 0 and "uniform" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run_tlkit(["classification", "compress", "--help"])
    assert p.returncode == 0
    for flag in (
        "--max_accuracy_drop",
        "--target_ratio",
        "--steps",
        "--retrain_epochs",
        "--no_distillation",
        "--allocation",
    ):
        assert flag in p.stdout, flag
