"""Model cards through a whole workflow on a tiny network: train -> prune -> retrain the pruned graph ->
export. Each step writes the card into the model (meta.json / ONNX metadata) and beside it (JSON + Markdown),
with the training config, metrics by split, throughput, datasets and the lineage chain with parent hashes."""

from __future__ import annotations

import json

import pytest

mx = pytest.importorskip("mxnet")

from test_training import BATCH, N_CLASSES, SIZE, make_job, make_validate  # noqa: E402

from tlkit.config import TrainConfig  # noqa: E402
from tlkit.errors import ModelFileError  # noqa: E402
from tlkit.io import file_digest  # noqa: E402
from tlkit.model_card import (  # noqa: E402
    CARD_VERSION,
    DatasetInfo,
    ModelCard,
    card_paths,
    read_card,
    verify_file,
)
from tlkit.model_io import read_meta  # noqa: E402
from tlkit.training import train  # noqa: E402


def _cfg(**kw) -> TrainConfig:
    base = {
        "n_epochs": 2,
        "batch_size_per_gpu": BATCH,
        "lr_config": {"type": "cosine", "learning_rate": 0.05},
        "reg_config": {"type": "L1", "weight_decay": 1e-4},
    }
    return TrainConfig.model_validate({**base, **kw})


def _train(tmp_path, name, **cfg):
    data = DatasetInfo.from_items(
        "train",
        [f"c{i % N_CLASSES}/img{i}.png" for i in range(32)],
        {"r": 11, "g": 11, "b": 10},
        path="/data/train",
        format="image_folder",
    )
    job = make_job(validate=make_validate(), kpi="validation_accuracy", save_as_graph=True, datasets=[data])
    return train(job, _cfg(**cfg), tmp_path / name).model_path


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """base (from scratch) -> finetuned (pretrained: base) -> pruned -> retrained (graph) -> exported ONNX."""
    from tlkit.export.onnx_export import export_onnx
    from tlkit.pruning.command import prune_model_file

    tmp = tmp_path_factory.mktemp("cards")
    base = _train(tmp, "base")
    tuned = _train(tmp, "tuned", pretrained_model_path=str(base))
    pruned = tmp / "pruned.tlk"
    prune_model_file(tuned, pruned, target_ratio=0.7, pruning_granularity=1, min_num_filters=1)
    retrained = _train(tmp, "retrained", pretrained_model_path=str(pruned), load_graph=True)
    onnx_path = export_onnx(retrained, tmp / "model.onnx")
    return {"base": base, "tuned": tuned, "pruned": pruned, "retrained": retrained, "onnx": onnx_path}


def test_training_writes_the_card_into_the_model_and_beside_it(workflow):
    path = workflow["base"]
    card = ModelCard.from_meta(read_meta(path))
    assert card.card_version == CARD_VERSION
    assert (card.task, card.arch, card.classes) == ("unit", "tiny", ["r", "g", "b"])
    assert card.input.shape == [3, SIZE, SIZE]
    t = card.training
    assert (t.epochs, t.epochs_planned, t.batch_size, t.batch_size_per_gpu) == (2, 2, BATCH, BATCH)
    assert t.lr_schedule["type"] == "cosine" and t.lr_schedule["learning_rate"] == 0.05
    assert t.regularizer == {"type": "L1", "weight_decay": 1e-4}
    assert t.devices == ["cpu(0)"] and t.amp is False and t.pretrained_model_path is None
    assert {(m.name, m.split) for m in card.metrics} == {
        ("loss", "train"),
        ("validation_loss", "validation"),
        ("validation_accuracy", "validation"),
    }
    assert all(m.measured_on == "model.tlk" for m in card.metrics)
    [perf] = card.performance
    assert perf.kind == "training" and perf.backend == "mxnet" and perf.batch == BATCH and perf.throughput > 0
    assert perf.threads >= 1 and perf.machine["cores"] >= 1
    [data] = card.datasets
    assert data.class_counts == {"r": 11, "g": 11, "b": 10} and data.items == 32 and len(data.file_list_sha256) == 64
    assert card.lineage == []
    js, md = card_paths(path)
    side = read_card(js)
    assert side.file.name == "model.tlk" and side.file.sha256 == file_digest(path)
    assert side.model_dump(exclude={"file"}) == card.model_dump(exclude={"file"})
    text = md.read_text()
    assert text.startswith("# Model card: tiny unit") and "| validation_accuracy |" in text and "## Training" in text


def test_file_list_hash_depends_on_the_files_not_their_order():
    a = DatasetInfo.from_items("train", ["b.png", "a.png"], {"x": 2})
    b = DatasetInfo.from_items("train", ["a.png", "b.png"], {"x": 2})
    c = DatasetInfo.from_items("train", ["a.png", "c.png"], {"x": 2})
    assert a.file_list_sha256 == b.file_list_sha256 != c.file_list_sha256


def test_lineage_chain_through_prune_retrain_export(workflow):
    base, tuned, pruned = workflow["base"], workflow["tuned"], workflow["pruned"]
    tuned_card = read_card(tuned)
    [parent] = tuned_card.lineage
    assert (parent.relation, parent.ref, parent.sha256) == ("pretrained", str(base), file_digest(base))
    assert parent.card["training"]["epochs"] == 2 and "lineage" not in parent.card

    pruned_card = read_card(pruned)
    assert [e.relation for e in pruned_card.lineage] == ["pruned_from", "pretrained"]
    assert pruned_card.lineage[0].sha256 == file_digest(tuned)
    assert pruned_card.lineage[0].card["metrics"] == tuned_card.to_dict()["metrics"]  # the parent's, kept there
    assert pruned_card.metrics == [] and pruned_card.training is None  # not measured / trained as such
    assert 0 < pruned_card.pruning.pruning_ratio < 1
    assert pruned_card.pruning.params_after < pruned_card.pruning.params_before
    assert read_card(card_paths(pruned)[0]).file.sha256 == file_digest(pruned)

    retrained_card = read_card(workflow["retrained"])
    assert retrained_card.training.load_graph is True
    assert retrained_card.training.pruning_ratio == pruned_card.pruning.pruning_ratio
    assert [e.relation for e in retrained_card.lineage] == ["pretrained", "pruned_from", "pretrained"]
    assert [e.sha256 for e in retrained_card.lineage] == [file_digest(pruned), file_digest(tuned), file_digest(base)]


def test_export_carries_the_card_into_onnx_metadata(workflow):
    from tlkit.export.onnx_export import read_onnx_metadata

    onnx_path, retrained = workflow["onnx"], workflow["retrained"]
    md = read_onnx_metadata(onnx_path)
    card = ModelCard.from_dict(md["card"])
    assert card.export.format == "onnx" and card.export.data_type == "fp32" and card.export.batch == "batch"
    assert card.lineage[0].relation == "exported_from" and card.lineage[0].sha256 == file_digest(retrained)
    assert [e.relation for e in card.lineage[1:]] == ["pretrained", "pruned_from", "pretrained"]
    assert {m.name for m in card.metrics} >= {"validation_accuracy"}  # measured on the exported .tlk
    assert read_card(onnx_path) == card
    side = json.loads(card_paths(onnx_path)[0].read_text())
    assert side["file"]["sha256"] == file_digest(onnx_path)


def test_verify_file_checks_the_sidecar_and_the_parents(workflow, tmp_path):
    import shutil

    problems = dict(verify_file(workflow["onnx"]))
    assert list(problems.values()) == [None] * len(problems) and len(problems) == 6  # file, sidecar, 4 parents
    copy = tmp_path / "pruned.tlk"
    shutil.copy(workflow["pruned"], copy)
    for p in card_paths(workflow["pruned"]):
        shutil.copy(p, tmp_path / p.name)
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a bit flip inside the weights
    copy.write_bytes(bytes(raw))
    bad = [p for _, p in verify_file(copy) if p]
    assert bad and any("corrupt" in p or "changed after its card was written" in p for p in bad), bad


def test_cards_of_older_files_and_bad_cards(tmp_path):
    meta = {"task": "classification", "arch": "resnet18", "classes": ["a"], "input_shape": [3, 8, 8]}
    card = ModelCard.from_meta(meta)  # a .tlk written before cards existed
    assert card.task == "classification" and card.input.shape == [3, 8, 8] and card.training is None
    newer = ModelCard.from_dict({"card_version": CARD_VERSION + 1, "task": "x", "future_field": {"a": 1}})
    assert newer.to_dict()["future_field"] == {"a": 1}  # kept when read and rewritten by this version
    with pytest.raises(ModelFileError, match=r"x\.json: model card metrics\.0\.value: Input should be a valid number"):
        ModelCard.from_dict({"metrics": [{"name": "m", "value": "high", "split": "test"}]}, "x.json")
    (tmp_path / "c.json").write_text("{nope")
    with pytest.raises(ModelFileError, match=r"c\.json: not a JSON model card"):
        read_card(tmp_path / "c.json")


def test_bench_records_inference_latency_in_the_card_beside_the_model(workflow, tmp_path):
    import shutil

    from tlkit.testing.plugins import run_tlkit

    onnx_copy = tmp_path / "model.onnx"
    shutil.copy(workflow["onnx"], onnx_copy)
    before = file_digest(onnx_copy)
    r = run_tlkit(["model", "bench", str(onnx_copy), "-n", "3", "--warmup", "1", "--threads", "1"])
    assert r.returncode == 0, r.stderr
    assert "Throughput:" in r.stdout and f"recorded in {card_paths(onnx_copy)[0]}" in r.stdout
    assert file_digest(onnx_copy) == before  # only the card beside it changes
    info = json.loads(run_tlkit(["model", "info", str(onnx_copy), "--json"]).stdout)
    inference = [p for p in info["performance"] if p["kind"] == "inference"]
    assert len(inference) == 1
    p = inference[0]
    assert (p["backend"], p["device"], p["batch"], p["threads"]) == ("onnxruntime", "CPUExecutionProvider", 1, 1)
    assert p["latency_ms"]["p50"] > 0 and p["throughput"] > 0 and p["machine"]["cores"] >= 1
    assert info["file"]["sha256"] == before
    assert "| inference | onnxruntime |" in card_paths(onnx_copy)[1].read_text()


def test_the_best_model_has_its_own_card(workflow):
    best = workflow["base"].with_name("model_best.tlk")
    card = read_card(best)
    assert card.training is not None and card.training.epochs in (1, 2)
    assert {m.measured_on for m in card.metrics} == {"model_best.tlk"}
    assert read_card(card_paths(best)[0]).file.sha256 == file_digest(best)


def test_evaluation_numbers_go_into_the_card_beside_the_model(workflow, tmp_path, monkeypatch):
    """The core's tlkit_on_stage_end: an evaluate command's numeric outputs, split "evaluation"; a re-run
    replaces them; an unwritable place only warns."""
    import io
    import shutil
    from types import SimpleNamespace

    from rich.console import Console

    from tlkit._builtin import tlkit_on_stage_end
    from tlkit.types import Stage, StageResult

    model = tmp_path / "model.tlk"
    shutil.copy(workflow["base"], model)
    out = io.StringIO()
    ctx = SimpleNamespace(model=model, console=Console(file=out, width=200))
    for acc in (0.5, 0.75):
        tlkit_on_stage_end(
            stage=Stage.EVALUATE,
            task="unit",
            context=ctx,
            result=StageResult(True, outputs={"accuracy": acc, "loss": 0.3, "report": "text", "ok": True}),
        )
    card = read_card(card_paths(model)[0])
    evaluation = {m.name: m.value for m in card.metrics if m.split == "evaluation"}
    assert evaluation == {"accuracy": 0.75, "loss": 0.3}
    assert {m.split for m in card.metrics} == {"train", "validation", "evaluation"}  # training's are kept
    assert f"metrics recorded in {card_paths(model)[0]}" in out.getvalue()
    tlkit_on_stage_end(stage=Stage.TRAIN, task="unit", context=ctx, result=StageResult(True, outputs={"accuracy": 0.1}))
    assert {m.name: m.value for m in read_card(card_paths(model)[0]).metrics if m.split == "evaluation"}[
        "accuracy"
    ] == 0.75
    import tlkit.model_card

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(card_paths(model)[0]))

    monkeypatch.setattr(tlkit.model_card, "write_card_files", unwritable)
    tlkit_on_stage_end(
        stage=Stage.EVALUATE, task="unit", context=ctx, result=StageResult(True, outputs={"accuracy": 1.0})
    )
    assert "warning: model card not updated: [Errno 13] Permission denied" in out.getvalue()
