"""The structured pruning engine: TLT's per-layer arithmetic, and pruned graphs that compute exactly what
the original computes with the removed channels zeroed, on residual, depthwise, concat, dense-after-
flatten and deconvolution graphs."""

from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest
from gluoncv.model_zoo import get_model
from mxnet.gluon import nn

from tlkit.model_io import graph_of, symbol_block
from tlkit.pruning.graph import (
    PruneError,
    filter_norms,
    merge_stats,
    normalize,
    prune_graph,
    retained_count,
    retained_idx,
)
from tlkit.testing.pruning import assert_prune_equivalent, randomize_params


def zoo(name: str, **kwargs):
    """A GluonCV model with random weights (BN statistics 1/0, the rest Xavier: see mxnet-notes)."""
    net = get_model(name, pretrained=False, **kwargs)
    for pname, p in net.collect_params().items():
        init = mx.init.One() if pname.endswith(("gamma", "running_var")) else None
        init = init or (mx.init.Zero() if pname.endswith(("beta", "running_mean", "bias")) else mx.init.Xavier())
        p.initialize(init)
    return net


def row(result, suffix: str):
    """The report row of the layer whose node name ends with `suffix` (Gluon prefixes carry counters)."""
    found = [r for r in result.report.layers if r.node.endswith(suffix)]
    assert len(found) == 1, (suffix, [r.node for r in result.report.layers])
    return found[0]


def node_name(symbol_json: str, suffix: str) -> str:
    return next(n["name"] for n in json.loads(symbol_json)["nodes"] if n["name"].endswith(suffix))


def param_key(params, suffix: str) -> str:
    return next(k for k in params if k.endswith(suffix))


# -- TLT arithmetic ---------------------------------------------------------------------------------


S = np.array([0.05, 0.9, 0.2, 1.0, 0.1, 0.5])


@pytest.mark.parametrize(
    "pth, pg, nf, expected",
    [
        (0.15, 1, 1, [1, 2, 3, 5]),  # count(s > pth), original order
        (0.1, 1, 1, [1, 2, 3, 5]),  # strictly greater: 0.1 itself is dropped
        (0.5, 4, 1, [1, 2, 3, 5]),  # 2 above 0.5, rounded up to 4: the top-4 by norm
        (0.95, 1, 3, [1, 3, 5]),  # floor min(nf, N) = 3
        (0.95, 8, 1, [0, 1, 2, 3, 4, 5]),  # rounding up is capped at N
        (0.0, 1, 1, [0, 1, 2, 3, 4, 5]),
        (2.0, 1, 0, [3]),  # -nf 0 still keeps one filter: a layer needs a channel
    ],
)
def test_retained_idx_follows_tlt(pth, pg, nf, expected):
    assert retained_idx(S, pth, pg, nf).tolist() == expected
    assert retained_count(S, pth, pg, nf) == len(expected)


def test_normalizers_and_equalization():
    s = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(normalize(s, "max"), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(normalize(np.full(9, 3.0), "L2"), np.full(9, 3.0))  # uniform -> sqrt(N)
    np.testing.assert_allclose(normalize(s, "L2"), s / np.linalg.norm(s) * 3)
    a, b = np.array([0.2, 0.8, 0.5]), np.array([0.4, 0.2, 0.5])
    np.testing.assert_allclose(merge_stats([a, b], "union"), [0.4, 0.8, 0.5])
    np.testing.assert_allclose(merge_stats([a, b], "intersection"), [0.2, 0.2, 0.5])
    np.testing.assert_allclose(merge_stats([a, b], "arithmetic_mean"), [0.3, 0.5, 0.5])
    np.testing.assert_allclose(merge_stats([a, b], "geometric_mean"), np.sqrt(a * b))
    w = np.zeros((2, 3, 1, 1), np.float32)
    w[0, :, 0, 0] = [3, 4, 0]
    w[1, :, 0, 0] = [0, 0, 1]
    np.testing.assert_allclose(filter_norms(w), [5.0, 1.0])


def plain_net():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(64, 3, padding=1), nn.Activation("relu"), nn.Conv2D(32, 3, padding=1))
        net.add(nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Dense(10))
    net.initialize(mx.init.Xavier())
    return net


def test_kept_filters_are_the_largest_normalized_norms():
    sym, params = graph_of(plain_net(), (3, 16, 16))
    params = randomize_params(sym, params, seed=3)
    first, second = param_key(params, "_conv0_weight"), param_key(params, "_conv1_weight")
    w = params[first].asnumpy()
    s = filter_norms(w) / filter_norms(w).max()
    res = prune_graph(sym, params, input_shape=(3, 16, 16), threshold=0.4, granularity=1, min_filters=1)
    keep = np.flatnonzero(s > 0.4)
    np.testing.assert_array_equal(res.params[first].asnumpy(), w[keep])
    np.testing.assert_array_equal(
        res.params[param_key(params, "_conv0_bias")].asnumpy(), params[param_key(params, "_conv0_bias")].asnumpy()[keep]
    )
    assert row(res, "_conv0_fwd").channels_after == len(keep) < 64
    # the next conv lost the matching input channels
    assert res.params[second].shape[1] == len(keep)
    np.testing.assert_array_equal(res.input_masks[second][1], keep)
    assert res.params[second].shape[0] < params[second].shape[0]
    # granularity 8 rounds the count up, keeping the next-largest norms
    res8 = prune_graph(sym, params, input_shape=(3, 16, 16), threshold=0.4, granularity=8, min_filters=1)
    n8 = -(-len(keep) // 8) * 8
    keep8 = np.sort(np.argsort(-s, kind="stable")[:n8])
    assert set(keep) <= set(keep8)
    np.testing.assert_array_equal(res8.params[first].asnumpy(), w[keep8])


# -- equivalence: the pruned graph equals the masked original -----------------------------------------


def test_no_pruning_at_threshold_zero_gives_identical_outputs():
    net = zoo("resnet18_v1")
    sym, params = graph_of(net, (3, 32, 32))
    params = randomize_params(sym, params)
    res = prune_graph(sym, params, input_shape=(3, 32, 32), threshold=0.0, granularity=1, min_filters=1)
    assert res.report.ratio == 1.0 and res.report.params_after == res.report.params_before
    assert all(r.channels_after == r.channels_before for r in res.report.layers)
    x = mx.nd.random.normal(shape=(2, 3, 32, 32))
    np.testing.assert_allclose(
        symbol_block(res.symbol_json, res.params)(x).asnumpy(),
        symbol_block(sym, params)(x).asnumpy(),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "name, size, thresholds",
    [
        ("resnet18_v1", 32, (0.3, 0.75)),  # residual adds
        ("mobilenetv2_1.0", 32, (0.4, 0.8)),  # depthwise + residual
        ("vgg11", 64, (0.5,)),  # Dense after flatten of a 2x2 map (rows expand per H*W)
        ("darknet53", 32, (0.6,)),  # LeakyReLU + residual
        ("googlenet", 224, (0.5,)),  # Concat offsets (its final 7x7 pool needs 224 px)
        ("densenet121", 224, (0.5,)),  # dense blocks: concats of concats
        ("se_resnet18_v2", 32, (0.5,)),  # squeeze-excite: Dense -> expand_dims -> broadcast_mul
        ("simple_pose_resnet18_v1b", (64, 48), (0.5,)),  # Deconvolution stack, conv heatmap head
    ],
)
def test_pruned_model_equals_masked_original(name, size, thresholds):
    net = zoo(name)
    h, w = size if isinstance(size, tuple) else (size, size)
    for i, pth in enumerate(thresholds):
        res = assert_prune_equivalent(net, (3, h, w), threshold=pth, seed=i)
        rep = res.report
        assert 0 < rep.ratio < 1 and rep.flops_after < rep.flops_before
        # the last layer (a Dense, a 1x1 conv classifier, a heatmap conv) is a network output: all kept
        assert rep.layers[-1].channels_after == rep.layers[-1].channels_before in (1000, 17)
        assert all(r.channels_after == r.channels_before for r in rep.layers if r.op == "Deconvolution")


def test_equalization_criteria_order_on_residual_groups():
    net = zoo("resnet18_v1")
    sym, params = graph_of(net, (3, 32, 32))
    params = randomize_params(sym, params)
    ratio = {
        eq: prune_graph(sym, params, input_shape=(3, 32, 32), threshold=0.5, equalization=eq).report.ratio
        for eq in ("union", "arithmetic_mean", "geometric_mean", "intersection")
    }
    # max >= mean >= geometric mean >= min, element-wise: more kept with union
    assert ratio["union"] > ratio["intersection"]
    assert ratio["union"] >= ratio["arithmetic_mean"] >= ratio["geometric_mean"] >= ratio["intersection"]
    # every conv feeding the same residual sum keeps the same channels
    res = prune_graph(sym, params, input_shape=(3, 32, 32), threshold=0.5)
    stem = res.report.layers[0]
    stage = [stem, row(res, "_stage1_conv1_fwd"), row(res, "_stage1_conv3_fwd")]
    assert len({r.channels_after for r in stage}) == 1 and stage[0].channels_after < 64
    np.testing.assert_array_equal(
        res.input_masks[param_key(params, "_stage1_conv0_weight")][1],
        res.input_masks[param_key(params, "_stage1_conv2_weight")][1],
    )


def test_mobilenet_depthwise_follows_its_input():
    net = zoo("mobilenetv2_1.0")
    res = assert_prune_equivalent(net, (3, 32, 32), threshold=0.6, granularity=1, min_filters=1)
    g = json.loads(res.symbol_json)
    nodes, r = g["nodes"], {x.node: x for x in res.report.layers}
    checked = 0
    for node in nodes:
        if node["op"] == "Convolution" and int(node["attrs"].get("num_group", 1)) > 1:
            assert node["attrs"]["num_group"] == node["attrs"]["num_filter"]
            src = nodes[node["inputs"][0][0]]  # walk back through BatchNorm/clip to the producing conv
            while src["op"] != "Convolution":
                src = nodes[src["inputs"][0][0]]
            assert r[node["name"]].channels_after == r[src["name"]].channels_after == int(node["attrs"]["num_group"])
            checked += r[src["name"]].channels_after < r[src["name"]].channels_before
    assert checked >= 5  # depthwise groups were actually pruned


class ConcatDeconvNet(nn.HybridBlock):
    """Concat of two branches -> (a) Deconvolution -> conv head, (b) conv -> pool -> Flatten -> Dense."""

    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.stem = nn.HybridSequential()
            self.stem.add(nn.Conv2D(24, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"))
            self.b1 = nn.Conv2D(16, 1)
            self.b2 = nn.HybridSequential()
            self.b2.add(nn.Conv2D(16, 3, padding=1), nn.BatchNorm(), nn.LeakyReLU(0.1))
            self.up = nn.Conv2DTranspose(8, 2, strides=2)
            self.up_head = nn.Conv2D(4, 1)
            self.mid = nn.HybridSequential()
            self.mid.add(nn.Conv2D(32, 3, padding=1), nn.Activation("relu"), nn.MaxPool2D(2), nn.Flatten())
            self.fc1 = nn.Dense(24)
            self.fc2 = nn.Dense(5)

    def hybrid_forward(self, F, x):
        y = self.stem(x)
        cat = F.concat(self.b1(y), self.b2(y), dim=1)
        seg = self.up_head(F.relu(self.up(cat)))
        cls = self.fc2(F.relu(self.fc1(self.mid(cat))))
        return cls, seg


def test_custom_concat_deconv_flatten_dense():
    net = ConcatDeconvNet()
    net.initialize(mx.init.Xavier())
    for pth in (0.3, 0.7):
        res = assert_prune_equivalent(net, (3, 16, 16), threshold=pth, granularity=1, min_filters=1)
        layers = res.report.layers
        deconv = [r for r in layers if r.op == "Deconvolution"]
        assert len(deconv) == 1 and deconv[0].channels_after == deconv[0].channels_before == 8  # never pruned
        heads = [r for r in layers if r.channels_before in (4, 5)]  # the two network outputs
        assert len(heads) == 2 and all(r.channels_after == r.channels_before for r in heads)
        assert row(res, "_dense0_fwd").channels_after < 24  # the hidden Dense was pruned
    # the deconv reads the concat: its input rows were sliced, by concat offsets
    deconv_node = next(r.node for r in res.report.layers if r.op == "Deconvolution")
    axis, kept, size = res.input_masks["arg:" + deconv_node[: -len("_fwd")] + "_weight"]
    assert axis == 0 and size == 32 and len(kept) < 32


class SqueezeExcite(nn.HybridBlock):
    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.conv = nn.Conv2D(32, 3, padding=1)
            self.se1 = nn.Conv2D(8, 1)
            self.se2 = nn.Conv2D(32, 1)
            self.conv2 = nn.Conv2D(32, 3, padding=1)
            self.bias = self.params.get("bias", shape=(1, 32, 1, 1), init=mx.init.Normal(1.0))
            self.fc = nn.Dense(3)

    def hybrid_forward(self, F, x, bias):
        y = F.relu(self.conv(x))
        w = F.sigmoid(self.se2(F.relu(self.se1(F.contrib.AdaptiveAvgPooling2D(y, output_size=1)))))
        z = F.broadcast_mul(y, w) + self.conv2(y)  # SE scaling and a residual sum
        z = F.broadcast_add(z, bias)  # a per-channel parameter: sliced with the channels
        return self.fc(F.contrib.AdaptiveAvgPooling2D(z, output_size=1))


def test_squeeze_excite_broadcast_and_channel_parameter():
    net = SqueezeExcite()
    net.initialize(mx.init.Xavier())
    res = assert_prune_equivalent(net, (3, 16, 16), threshold=0.6, granularity=1, min_filters=1)
    group = [row(res, s) for s in ("_conv0_fwd", "_conv2_fwd", "_conv3_fwd")]  # conv, se2, conv2
    assert len({r.channels_after for r in group}) == 1 and group[0].channels_after < 32  # one group
    assert row(res, "_conv1_fwd").channels_after <= 8
    bias = next(k for k in res.params if k.endswith("_bias") and res.params[k].ndim == 4)
    assert res.params[bias].shape[1] == group[0].channels_after


class TransposeNet(nn.HybridBlock):
    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.conv = nn.Conv2D(16, 3, padding=1)
            self.conv2 = nn.Conv2D(8, 1)

    def hybrid_forward(self, F, x):
        y = F.relu(self.conv(x))
        return F.transpose(self.conv2(F.transpose(y, axes=(0, 2, 3, 1)).transpose(axes=(0, 3, 1, 2))))


def test_unknown_op_after_a_pruned_layer_is_a_clear_error():
    net = TransposeNet()
    net.initialize(mx.init.Xavier())
    sym, params = graph_of(net, (3, 8, 8))
    params = randomize_params(sym, params)
    with pytest.raises(PruneError) as err:
        prune_graph(sym, params, input_shape=(3, 8, 8), threshold=0.5, granularity=1, min_filters=1)
    msg = str(err.value)
    assert "'transpose'" in msg and "-el " in msg and "conv0" in msg and "\n" not in msg
    node = msg.split("-el ")[1].split("`")[0]
    assert node.count(",") == 1  # both transposes that read pruned channels, in one message
    # following the advice works, and the result is still exact
    res = assert_prune_equivalent(
        net, (3, 8, 8), threshold=0.5, granularity=1, min_filters=1, excluded_layers=[node], expect_pruned=False
    )
    assert all(r.channels_after == r.channels_before for r in res.report.layers)


def test_excluded_layers_and_bad_options():
    net = zoo("resnet18_v1")
    sym, params = graph_of(net, (3, 32, 32))
    params = randomize_params(sym, params)
    name = node_name(sym, "_stage2_conv0_fwd")[: -len("_fwd")]  # the Gluon block name works
    res = prune_graph(sym, params, input_shape=(3, 32, 32), threshold=0.6, excluded_layers=[name])
    assert row(res, "_stage2_conv0_fwd").channels_after == 128 and row(res, "_stage2_conv0_fwd").excluded
    assert row(res, "_stage2_conv1_fwd").channels_after < 128
    typo = name.replace("conv0", "cnv0")
    with pytest.raises(PruneError, match=rf"excluded layer '{typo}'.*did you mean"):
        prune_graph(sym, params, input_shape=(3, 32, 32), excluded_layers=[typo])
    with pytest.raises(PruneError, match="normalizer 'l1': expected one of max, L2"):
        prune_graph(sym, params, input_shape=(3, 32, 32), normalizer="l1")
    with pytest.raises(PruneError, match="equalization criterion 'max'"):
        prune_graph(sym, params, input_shape=(3, 32, 32), equalization="max")
    with pytest.raises(PruneError, match=r"target ratio 1.5: expected a parameter ratio in \(0, 1\]"):
        prune_graph(sym, params, input_shape=(3, 32, 32), target_ratio=1.5)
    with pytest.raises(PruneError, match="cannot infer the graph's shapes for input shape"):
        prune_graph(sym, params, input_shape=(5, 32, 32))


def test_target_ratio_reaches_the_target_closely():
    net = zoo("resnet18_v1")
    sym, params = graph_of(net, (3, 32, 32))
    params = randomize_params(sym, params)
    for target in (0.5, 0.25):
        res = prune_graph(sym, params, input_shape=(3, 32, 32), target_ratio=target)
        # at most the target (a user asking for 0.25 gets at least 4x fewer parameters), and close to it
        assert target - 0.03 < res.report.ratio <= target, res.report.ratio
        # the reported threshold reproduces it
        again = prune_graph(sym, params, input_shape=(3, 32, 32), threshold=res.report.threshold)
        assert again.report.params_after == res.report.params_after
    # below what min_num_filters allows: the smallest model it can make
    floor = prune_graph(sym, params, input_shape=(3, 32, 32), target_ratio=0.001)
    assert all(r.channels_after >= 16 for r in floor.report.layers)


def test_report_table_csv_and_summary(tmp_path):
    net = zoo("resnet18_v1")
    sym, params = graph_of(net, (3, 32, 32))
    res = prune_graph(sym, randomize_params(sym, params), input_shape=(3, 32, 32), threshold=0.5)
    rep = res.report
    assert rep.summary_line() == f"Pruning ratio (pruned model / original model): {rep.ratio}"
    assert rep.ratio == rep.params_after / rep.params_before
    assert rep.params_before == sum(int(np.prod(v.shape)) for v in params.values())
    rep.to_csv(tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "node,op,channels_before,channels_after,kept_pct,excluded"
    assert len(lines) == 1 + len(rep.layers) == 1 + 21
    from rich.console import Console

    console = Console(record=True, width=140)
    console.print(rep.table())
    text = console.export_text()
    assert node_name(sym, "_stage4_conv1_fwd") in text and "kept %" in text and "(kept)" in text


def test_yolov3_with_heads_excluded_prunes_through_upsampling_and_anchor_shapes():
    """YOLOv3: nearest upsampling by `repeat`, anchors read feature shapes (`slice_like`); the three output
    convolutions are heads (TLT excludes conv_big/mid/sm_object the same way)."""
    net = zoo("yolo3_mobilenet1.0_coco", pretrained_base=False)
    sym, params = graph_of(net, (3, 96, 96))
    with pytest.raises(PruneError, match=r"op 'transpose'.*-el "):
        prune_graph(sym, randomize_params(sym, params), input_shape=(3, 96, 96), threshold=0.5)
    heads = [n["name"] for n in json.loads(sym)["nodes"] if n["op"] == "Convolution" and "yolooutput" in n["name"]]
    assert len(heads) == 3
    res = assert_prune_equivalent(net, (3, 96, 96), threshold=0.5, excluded_layers=heads, compare_nodes=heads, batch=1)
    assert res.report.ratio < 0.8
    assert all(row(res, h).channels_after == row(res, h).channels_before for h in heads)


class SharedConvNet(nn.HybridBlock):
    """One 1x1 conv applied to two feature maps (a shared head), flattened at two resolutions, concatenated."""

    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.a = nn.Conv2D(24, 3, padding=1)
            self.b = nn.Conv2D(24, 3, padding=1, strides=2)
            self.shared = nn.Conv2D(16, 1)
            self.fc = nn.Dense(3)

    def hybrid_forward(self, F, x):
        a = F.relu(self.a(x))
        b = F.relu(self.b(a))
        return self.fc(F.concat(F.flatten(F.relu(self.shared(a))), F.flatten(F.relu(self.shared(b))), dim=1))


def test_shared_weights_prune_one_set_of_channels():
    net = SharedConvNet()
    net.initialize(mx.init.Xavier())
    res = assert_prune_equivalent(net, (3, 8, 8), threshold=0.6, granularity=1, min_filters=1)
    shared = [r for r in res.report.layers if r.node.endswith("_conv2_fwd")]
    assert len(shared) == 2 and shared[0].channels_after == shared[1].channels_after < 16
    a, b = row(res, "_conv0_fwd"), row(res, "_conv1_fwd")
    assert a.channels_after == b.channels_after < 24  # both feed the shared conv: one group
    # the Dense reads 16 channels x 64 positions, then 16 x 16: rows follow both flattens
    w = res.params[param_key(res.params, "_dense0_weight")]
    assert w.shape[1] == shared[0].channels_after * (64 + 16)


class SplitNet(nn.HybridBlock):
    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.conv0 = nn.Conv2D(16, 3, padding=1)
            self.conv1 = nn.Conv2D(16, 3, padding=1)
            self.conv2 = nn.Conv2D(16, 3, padding=1)
            self.fc = nn.Dense(3)

    def hybrid_forward(self, F, x):
        a, b = F.split(F.relu(self.conv0(x)), num_outputs=2, axis=1)
        y = F.concat(F.relu(self.conv1(a)), F.relu(self.conv2(b)), dim=1)
        return self.fc(F.contrib.AdaptiveAvgPooling2D(y, output_size=1))


def test_channel_split_keeps_its_input_whole_like_tlt():
    net = SplitNet()
    net.initialize(mx.init.Xavier())
    res = assert_prune_equivalent(net, (3, 8, 8), threshold=0.6, granularity=1, min_filters=1)
    assert row(res, "_conv0_fwd").channels_after == 16 and row(res, "_conv0_fwd").excluded
    assert row(res, "_conv1_fwd").channels_after < 16 and row(res, "_conv2_fwd").channels_after < 16


# -- channel allocation: uniform / global, the per-layer floor, FLOPs and MACs targets -----------------------


@pytest.fixture(scope="module")
def resnet_graph():
    sym, params = graph_of(zoo("resnet18_v1"), (3, 64, 64))
    return sym, randomize_params(sym, params)


def test_uniform_keeps_the_same_fraction_of_every_layer(resnet_graph):
    sym, params = resnet_graph
    res = prune_graph(sym, params, input_shape=(3, 64, 64), target_ratio=0.25, allocation="uniform", min_filters=8)
    frac = res.report.threshold  # the kept fraction the search found
    for r in res.report.layers:
        if r.excluded:
            continue
        expected = max(-(-int(np.ceil(frac * r.channels_before - 1e-9)) // 8) * 8, 8)
        assert r.channels_after == min(expected, r.channels_before), r
    assert res.report.ratio <= 0.25
    with pytest.raises(PruneError, match="uniform.*--target_ratio, --target_flops or --target_macs"):
        prune_graph(sym, params, input_shape=(3, 64, 64), allocation="uniform")


def test_global_allocation_buys_the_fewest_macs_at_a_parameter_count(resnet_graph):
    sym, params = resnet_graph
    reps = {
        a: prune_graph(sym, params, input_shape=(3, 64, 64), target_ratio=0.1, allocation=a).report
        for a in ("threshold", "uniform", "global")
    }
    assert all(r.ratio <= 0.1 for r in reps.values())
    assert reps["global"].flops_after < 0.8 * min(reps["threshold"].flops_after, reps["uniform"].flops_after)
    # the first (highest-resolution) layers give up the most channels
    first = reps["global"].layers[0]
    assert first.channels_after <= min(r.channels_after for r in reps["global"].layers if not r.excluded)


def test_every_layer_keeps_its_floor_and_multiples_of_the_granularity(resnet_graph):
    sym, params = resnet_graph
    for alloc in ("threshold", "global"):
        res = prune_graph(
            sym,
            params,
            input_shape=(3, 64, 64),
            target_ratio=0.001,
            allocation=alloc,
            min_filters=1,
            min_channel_ratio=0.25,
        )
        for r in res.report.layers:
            assert r.channels_after >= r.channels_before // 4, (alloc, r)
            assert r.channels_after % 8 == 0 or r.channels_after == r.channels_before
    tlt = prune_graph(sym, params, input_shape=(3, 64, 64), target_ratio=0.001, min_filters=8, min_channel_ratio=0.0)
    assert min(r.channels_after for r in tlt.report.layers) == 8  # TLT alone: only -nf
    with pytest.raises(PruneError, match=r"min_channel_ratio 1.5"):
        prune_graph(sym, params, input_shape=(3, 64, 64), min_channel_ratio=1.5)
    with pytest.raises(PruneError, match="allocation 'fast': expected one of threshold, uniform, global"):
        prune_graph(sym, params, input_shape=(3, 64, 64), allocation="fast")


@pytest.mark.parametrize("alloc", ["threshold", "uniform", "global"])
def test_flops_and_macs_targets(resnet_graph, alloc):
    sym, params = resnet_graph
    res = prune_graph(sym, params, input_shape=(3, 64, 64), target_flops=0.3, allocation=alloc)
    assert 0.2 < res.report.flops_ratio <= 0.3
    before = res.report.flops_before
    # an absolute MAC count (> 1) is the same budget as the matching FLOPs ratio
    macs = prune_graph(sym, params, input_shape=(3, 64, 64), target_macs=0.3 * before / 2, allocation=alloc)
    assert macs.report.flops_after == res.report.flops_after
    # both a parameter and a FLOPs budget: both hold
    both = prune_graph(sym, params, input_shape=(3, 64, 64), target_flops=0.5, target_ratio=0.2, allocation=alloc)
    assert both.report.flops_ratio <= 0.5 and both.report.ratio <= 0.2
    with pytest.raises(PruneError, match="target_flops -1"):
        prune_graph(sym, params, input_shape=(3, 64, 64), target_flops=-1)


@pytest.mark.parametrize("alloc", ["uniform", "global"])
def test_other_allocations_stay_exact(alloc):
    res = assert_prune_equivalent(
        zoo("mobilenetv2_0.25"), (3, 32, 32), target_ratio=0.5, allocation=alloc, granularity=1, min_filters=1
    )
    assert res.report.ratio <= 0.5
