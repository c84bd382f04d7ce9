"""The peer of the ResNet-18 pruning benchmark: Torch-Pruning (`MagnitudePruner`, L2 magnitude, `round_to=8`,
uniform per-layer ratio, the classifier kept) on torchvision's ResNet-18 layout, pruned to a parameter count.

Runs in the benchmark-only venv (`make bench-torch`: torch + torch-pruning, never a tlkit dependency):

    .venvs/bench-torch/bin/python benchmarks/peers/torch_pruning_resnet18.py PARAMS OUT_DIR [SIZE]

Bisects the pruning ratio to the largest model with at most PARAMS parameters, exports it and the unpruned
model to ONNX (opset 13, dynamic batch) and writes OUT_DIR/torch_pruning.json (params, MACs, ratio).
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch_pruning as tp


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class ResNet18(nn.Module):
    """torchvision.models.resnet18's layout (torchvision is not needed for this)."""

    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def model(seed=0):
    torch.manual_seed(seed)
    m = ResNet18().eval()
    for mod in m.modules():  # non-uniform filter norms, as tlkit's randomize_params gives its side
        if isinstance(mod, nn.Conv2d):
            with torch.no_grad():
                mod.weight.mul_(torch.rand(mod.weight.shape[0], 1, 1, 1) * 1.5 + 0.25)
    return m


def pruned(ratio, size):
    m = model()
    x = torch.randn(1, 3, size, size)
    pruner = tp.pruner.MagnitudePruner(
        m, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio, round_to=8, ignored_layers=[m.fc]
    )
    pruner.step()
    macs, params = tp.utils.count_ops_and_params(m, x)
    return m, int(params), int(macs)


def export(m, path, size):
    torch.onnx.export(
        m,
        torch.randn(1, 3, size, size),
        str(path),
        input_names=["data"],
        output_names=["out"],
        dynamic_axes={"data": {0: "batch"}, "out": {0: "batch"}},
        opset_version=13,
        dynamo=False,
    )


def main():
    target, out = int(sys.argv[1]), Path(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 224
    out.mkdir(parents=True, exist_ok=True)
    base = model()
    x = torch.randn(1, 3, size, size)
    macs0, params0 = tp.utils.count_ops_and_params(base, x)
    lo, hi = 0.0, 0.99  # pruning ratio: params(lo) > target >= params(hi)
    for _ in range(20):
        mid = (lo + hi) / 2
        if pruned(mid, size)[1] > target:
            lo = mid
        else:
            hi = mid
    m, params, macs = pruned(hi, size)
    export(base, out / "torch_unpruned.onnx", size)
    export(m, out / "torch_pruned.onnx", size)
    info = {
        "torch": torch.__version__,
        "torch_pruning": tp.__version__,
        "pruning_ratio": hi,
        "round_to": 8,
        "params_before": int(params0),
        "macs_before": int(macs0),
        "params": params,
        "macs": macs,
    }
    (out / "torch_pruning.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
