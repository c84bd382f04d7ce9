"""`tlkit <task> prune`: model file in, pruned graph model file out, with TLT's report, CSV and status.json."""

from __future__ import annotations

import io
import json
import sys
import zipfile

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn
from rich.console import Console

from tlkit import model_io
from tlkit.context import CommandContext
from tlkit.errors import ModelFileError, TlkitError
from tlkit.pruning.command import prune_kwargs, prune_model_file, run
from tlkit.types import TaskSpec


def small_net():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(32, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"))
        net.add(nn.Conv2D(32, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"), nn.MaxPool2D(2))
        net.add(nn.Conv2D(16, 3, padding=1), nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Dense(4))
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 16, 16)))  # finish deferred initialization
    # non-uniform filter norms so a threshold removes filters
    rng = np.random.default_rng(0)
    for name, p in net.collect_params().items():
        if name.endswith("weight"):
            scale = rng.uniform(0.05, 1.0, size=(p.shape[0],) + (1,) * (len(p.shape) - 1))
            p.set_data(p.data() * mx.nd.array(scale))
    return net


def conv_nodes(symbol_json):
    return [n["name"] for n in json.loads(symbol_json)["nodes"] if n["op"] == "Convolution"]


@pytest.fixture()
def graph_model(tmp_path):
    net = small_net()
    path = model_io.save_net(
        tmp_path / "model.tlk",
        net,
        {"task": "classification", "arch": "tiny", "input_shape": [3, 16, 16], "classes": list("abcd")},
        as_graph=True,
    )
    return path, net


def test_prune_model_file_writes_a_loadable_graph_model(graph_model, tmp_path):
    path, net = graph_model
    out = tmp_path / "pruned.tlk"
    report = prune_model_file(path, out, pruning_threshold=0.5, pruning_granularity=1, min_num_filters=1)
    assert out.is_file() and not list(tmp_path.glob(".*.tmp"))  # atomic: no leftovers
    pruned, meta = model_io.load_net(out)
    assert meta["kind"] == "graph" and meta["pruned"] is True and meta["classes"] == list("abcd")
    assert meta["pruning"]["pruning_ratio"] == report.ratio < 1
    assert meta["pruning"]["params_after"] == report.params_after
    x = mx.nd.random.normal(shape=(2, 3, 16, 16))
    assert pruned(x).shape == net(x).shape == (2, 4)
    # the stored params are exactly the report's parameter count
    assert sum(int(np.prod(v.shape)) for v in model_io.load_model(out).params.values()) == report.params_after
    # a pruned model prunes again (iterative prune/retrain)
    again = prune_model_file(out, tmp_path / "pruned2.tlk", pruning_threshold=0.8, pruning_granularity=1)
    assert again.params_before == report.params_after and again.params_after < again.params_before
    assert model_io.load_net(tmp_path / "pruned2.tlk")[0](x).shape == (2, 4)


def test_meta_prune_exclude_marks_heads(graph_model, tmp_path):
    path, _ = graph_model
    mf = model_io.load_model(path)
    first = conv_nodes(mf.symbol_json)[0]
    mf.meta["prune_exclude"] = [first[: -len("_fwd")], "not_in_this_variant"]  # unknown head names: skipped
    model_io.save_model(path, mf)
    report = prune_model_file(path, tmp_path / "p.tlk", pruning_threshold=0.5, pruning_granularity=1, min_num_filters=1)
    rows = {r.node: r for r in report.layers}
    assert rows[first].channels_after == 32 and rows[first].excluded
    assert any(r.channels_after < r.channels_before for r in report.layers)
    # a user's -el typo is an error, not silently ignored
    with pytest.raises(TlkitError, match="excluded layer 'conv_typo'"):
        prune_model_file(path, tmp_path / "q.tlk", excluded_layers=("conv_typo",))


def test_gluon_model_file_is_rebuilt_by_its_task(tmp_path, monkeypatch):
    net = small_net()
    path = model_io.save_net(tmp_path / "g.tlk", net, {"task": "tinytask", "input_shape": [3, 16, 16]})
    assert model_io.load_model(path).kind == "gluon"

    def build_model(meta):
        return small_net()

    class FakeRegistry:
        def task(self, name):
            assert name == "tinytask"
            return TaskSpec(name, "tiny", config_model=object, commands=(), build_model=build_model)

        def pruner(self, name):
            from tlkit.pruning.catalog import PRUNERS

            return PRUNERS[0]

    monkeypatch.setattr("tlkit.registry.get_registry", lambda: FakeRegistry())
    report = prune_model_file(path, tmp_path / "g_pruned.tlk", pruning_threshold=0.5, pruning_granularity=1)
    assert report.ratio < 1
    pruned, meta = model_io.load_net(tmp_path / "g_pruned.tlk")
    assert meta["kind"] == "graph" and meta["task"] == "tinytask"
    assert pruned(mx.nd.zeros((1, 3, 16, 16))).shape == (1, 4)


def test_model_without_input_shape_is_refused(tmp_path):
    path = model_io.save_net(tmp_path / "m.tlk", small_net(), {"task": "t"})
    with pytest.raises(ModelFileError, match="no 'input_shape'"):
        prune_model_file(path, tmp_path / "o.tlk")


def make_ctx(model, output, results_dir, **options):
    buf = io.StringIO()
    ctx = CommandContext(
        task="classification",
        command="prune",
        model=model,
        output=output,
        results_dir=results_dir,
        options=options,
        console=Console(file=buf, width=160),
    )
    return ctx, buf


def test_run_prints_tlt_summary_and_writes_csv_and_status(graph_model, tmp_path):
    path, _ = graph_model
    results = tmp_path / "results"
    options = {
        "normalizer": "max",
        "equalization_criterion": "union",
        "pruning_granularity": 8,
        "pruning_threshold": 0.5,
        "min_num_filters": 8,
        "excluded_layers": (),
        "target_ratio": None,
    }
    ctx, buf = make_ctx(path, tmp_path / "out" / "pruned", results, **options)
    run(ctx)
    out = tmp_path / "out" / "pruned.tlk"  # TLT-like: the suffix is added
    assert out.is_file()
    text = buf.getvalue()
    meta = model_io.read_meta(out)
    ratio = meta["pruning"]["pruning_ratio"]
    assert f"Pruning ratio (pruned model / original model): {ratio}\n" in text
    assert "Parameters:" in text and "File size:" in text and "FLOPs" in text and "kept %" in text
    csv_lines = (results / "pruned_pruning.csv").read_text().splitlines()
    assert csv_lines[0].startswith("node,op,channels_before,channels_after") and len(csv_lines) == 5
    status = [json.loads(line) for line in (results / "status.json").read_text().splitlines()]
    assert [s["status"] for s in status] == ["STARTED", "SUCCESS"]
    kpi = status[-1]["kpi"]
    assert kpi["pruning_ratio"] == ratio and kpi["param_count"] == meta["pruning"]["params_after"]
    assert kpi["size"] == pytest.approx(out.stat().st_size / 2**20)
    with zipfile.ZipFile(out) as zf:
        assert {"meta.json", "params.nd", "symbol.json"} <= set(zf.namelist())


def test_run_target_ratio_and_errors(graph_model, tmp_path):
    path, _ = graph_model
    ctx, _ = make_ctx(path, tmp_path / "t.tlk", None, target_ratio=0.5, pruning_granularity=1, min_num_filters=1)
    run(ctx)
    assert abs(model_io.read_meta(tmp_path / "t.tlk")["pruning"]["pruning_ratio"] - 0.5) < 0.1
    assert (tmp_path / "t_pruning.csv").is_file()  # no results dir: the CSV goes next to the output

    ctx, buf = make_ctx(path, tmp_path / "z.tlk", None, pruning_threshold=0.0)
    run(ctx)
    assert "Pruning ratio (pruned model / original model): 1.0\n" in buf.getvalue()
    assert "No filter was removed" in buf.getvalue()

    ctx, _ = make_ctx(None, tmp_path / "x.tlk", None)
    with pytest.raises(TlkitError, match="-m/--model"):
        run(ctx)
    ctx, _ = make_ctx(path, None, None)
    with pytest.raises(TlkitError, match="-o/--output"):
        run(ctx)
    results = tmp_path / "r"
    ctx, _ = make_ctx(path, tmp_path / "y.tlk", results, normalizer="L1")
    with pytest.raises(TlkitError, match="normalizer 'L1'"):
        run(ctx)
    assert json.loads((results / "status.json").read_text().splitlines()[-1])["status"] == "FAILURE"
    assert not (tmp_path / "y.tlk").exists()


def test_threshold_that_cuts_everything_is_refused_or_warned(graph_model, tmp_path):
    """-pth >= 1 cuts every layer to -nf: refused; a threshold that still does it (0.999) is warned about."""
    path, _ = graph_model
    ctx, _ = make_ctx(path, tmp_path / "a.tlk", None, pruning_threshold=1.5)
    with pytest.raises(TlkitError, match=r"^-pth 1\.5: normalized filter norms are at most 1"):
        run(ctx)
    assert not (tmp_path / "a.tlk").exists()
    ctx, buf = make_ctx(  # TLT's floor alone (-nf), without tlkit's per-layer --min_channel_ratio
        path,
        tmp_path / "b.tlk",
        None,
        pruning_threshold=0.999,
        pruning_granularity=1,
        min_num_filters=2,
        min_channel_ratio=0.0,
    )
    run(ctx)
    assert "warning: every prunable layer" in buf.getvalue() and "minimum of 2 filters" in buf.getvalue()
    ctx, buf = make_ctx(
        path, tmp_path / "b2.tlk", None, pruning_threshold=0.999, pruning_granularity=1, min_num_filters=2
    )
    run(ctx)  # with the default 1/8 floor the 32-channel layers keep 4, the 16-channel one 2
    assert "minimum of floor (-nf / --min_channel_ratio: 2-4 filters)" in buf.getvalue().replace("\n", " ")
    ctx, buf = make_ctx(path, tmp_path / "c.tlk", None, pruning_threshold=0.3, pruning_granularity=1, min_num_filters=1)
    run(ctx)
    assert "warning" not in buf.getvalue()
    with pytest.raises(TlkitError, match="would overwrite the model being pruned"):
        run(make_ctx(path, path, None)[0])


def test_prune_kwargs_maps_cli_names():
    kw = prune_kwargs(
        {
            "pruning_threshold": 0.2,
            "excluded_layers": ("a,b", "c"),
            "target_ratio": None,
            "equalization_criterion": "union",
        }
    )
    assert kw == {"threshold": 0.2, "excluded_layers": ["a", "b", "c"], "equalization": "union"}


def test_catalog_is_light_and_registered():
    import subprocess

    code = (
        "import sys; from tlkit.pruning.catalog import PRUNERS; import tlkit.pruning; "
        "assert 'mxnet' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules); "
        "print(PRUNERS[0].name, PRUNERS[0].prune)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "l2 tlkit.pruning.command:prune_symbol"


def test_pruner_entry_point_prunes_a_graph_and_prune_net_a_network():
    from tlkit.lazy import resolve
    from tlkit.pruning.catalog import PRUNERS
    from tlkit.pruning.command import prune_net

    net = small_net()
    options = {"input_shape": (3, 16, 16), "pruning_threshold": 0.5}
    result = resolve(PRUNERS[0].prune)(*model_io.graph_of(net, (3, 16, 16)), options)
    block = model_io.symbol_block(result.symbol_json, result.params)
    assert result.report.ratio < 1 and block(mx.nd.zeros((1, 3, 16, 16))).shape == (1, 4)
    pruned, report = prune_net(net, options)
    assert report.summary() == result.report.summary() and pruned(mx.nd.zeros((1, 3, 16, 16))).shape == (1, 4)


def test_symbolic_graph_of_matches_export_and_falls_back():
    net = small_net()
    sym_fast, params_fast = model_io.graph_of(net, (3, 16, 16))
    sym_ref, params_ref = model_io._exported_graph(net, (3, 16, 16))
    fast, ref = json.loads(sym_fast)["nodes"], json.loads(sym_ref)["nodes"]
    assert [(n["op"], n["name"]) for n in fast] == [(n["op"], n["name"]) for n in ref]
    assert sorted(params_fast) == sorted(params_ref)
    for k in params_ref:
        np.testing.assert_array_equal(params_fast[k].asnumpy(), params_ref[k].asnumpy())
    x = mx.nd.random.normal(shape=(2, 3, 16, 16))
    np.testing.assert_array_equal(model_io.symbol_block(sym_fast, params_fast)(x).asnumpy(), net(x).asnumpy())
    # parameters still waiting for their first batch: the slow path traces (and initialises) them
    lazy = nn.HybridSequential()
    lazy.add(nn.Conv2D(8, 3), nn.GlobalAvgPool2D(), nn.Dense(2))
    lazy.initialize()
    sym, params = model_io.graph_of(lazy, (3, 8, 8))
    assert len(params) == 4 and "Convolution" in sym


@pytest.fixture
def spy_pruner():
    """A registry with a plugin pruner `spy` (classification models only) that records its calls and keeps
    every other filter of each layer it may prune."""
    from tlkit.testing.plugins import plugin, registered_plugin
    from tlkit.types import PrunerSpec

    calls = []

    def prune(symbol_json, params, options):
        from tlkit.pruning.command import prune_symbol

        calls.append(options)
        return prune_symbol(symbol_json, params, {**options, "target_ratio": 0.5, "pruning_granularity": 1})

    spy = PrunerSpec("spy", prune=prune, tasks=frozenset({"classification"}))
    with registered_plugin(plugin(tlkit_register_pruners=lambda: [spy]), "spy"):
        yield calls


def test_prune_runs_the_pruner_named_by_pruner(graph_model, tmp_path, spy_pruner):
    path, _ = graph_model
    first = conv_nodes(model_io.load_model(path).symbol_json)[0]
    ctx, buf = make_ctx(path, tmp_path / "s.tlk", None, pruner="spy", excluded_layers=(first,))
    run(ctx)
    (options,) = spy_pruner
    assert options["input_shape"] == (3, 16, 16) and options["excluded_layers"] == [first]
    meta = model_io.read_meta(tmp_path / "s.tlk")
    assert meta["kind"] == "graph" and meta["pruning"]["pruning_ratio"] == pytest.approx(0.5, abs=0.1)
    assert f"Pruning ratio (pruned model / original model): {meta['pruning']['pruning_ratio']}" in buf.getvalue()
    # the default is still core's l2 (TLT's threshold pruning), not the plugin's
    ctx, _ = make_ctx(path, tmp_path / "d.tlk", None, pruning_threshold=0.5, pruning_granularity=1, min_num_filters=1)
    run(ctx)
    assert len(spy_pruner) == 1 and model_io.read_meta(tmp_path / "d.tlk")["pruning"]["threshold"] == 0.5


def test_unknown_or_foreign_pruner_is_refused_naming_the_installed_ones(graph_model, tmp_path, spy_pruner):
    path, _ = graph_model
    ctx, _ = make_ctx(path, tmp_path / "u.tlk", None, pruner="spyy")
    with pytest.raises(TlkitError, match=r"unknown pruner 'spyy'; did you mean 'spy'\? Installed pruners: l2, spy\."):
        run(ctx)
    detection = model_io.save_net(
        tmp_path / "det.tlk", small_net(), {"task": "detection", "input_shape": [3, 16, 16]}, as_graph=True
    )
    ctx, _ = make_ctx(detection, tmp_path / "v.tlk", None, pruner="spy")
    with pytest.raises(TlkitError, match="--pruner spy: prunes classification models, not 'detection' ones"):
        run(ctx)
    assert not (tmp_path / "u.tlk").exists() and not (tmp_path / "v.tlk").exists() and not spy_pruner
