"""The built-in architectures and weight formats, as light records (no MXNet import here).

`tlkit._builtin` registers these through the plugin hooks. Every backbone here is `task=None` (usable by
every task); `build` takes the keyword options of `tlkit.backbones.build_backbone`.
"""

from tlkit.types import ArchitectureSpec, WeightFormatSpec

_M = "tlkit.backbones"


def _arch(name: str, module: str, summary: str, **kw) -> ArchitectureSpec:
    return ArchitectureSpec(name=name, build=f"{_M}.{module}:{name}", summary=summary, **kw)


ARCHITECTURES: tuple[ArchitectureSpec, ...] = (
    _arch("resnet10", "resnet", "ResNet-10 v1 (TLT; one block per stage), 512 channels"),
    _arch("resnet18", "resnet", "ResNet-18 v1 (GluonCV resnet18_v1 layout), 512 channels"),
    _arch("resnet34", "resnet", "ResNet-34 v1 (GluonCV resnet34_v1 layout), 512 channels"),
    _arch("resnet50", "resnet", "ResNet-50 v1 (GluonCV resnet50_v1 layout), 2048 channels"),
    _arch("resnet101", "resnet", "ResNet-101 v1 (GluonCV resnet101_v1 layout), 2048 channels"),
    _arch("vgg16", "classic", "VGG-16 conv layers (GluonCV vgg16 / vgg16_bn layout), 512 channels"),
    _arch("vgg19", "classic", "VGG-19 conv layers (GluonCV vgg19 / vgg19_bn layout), 512 channels"),
    _arch("mobilenet_v1", "classic", "MobileNet v1 1.0 (GluonCV mobilenet1.0), 1024 channels"),
    _arch("mobilenet_v2", "classic", "MobileNet v2 1.0 (GluonCV mobilenetv2_1.0), 1280 channels"),
    _arch("googlenet", "classic", "GoogLeNet / Inception v1 with BN (GluonCV googlenet), 1024 channels"),
    _arch("darknet19", "classic", "DarkNet-19 (YOLOv2), 1024 channels"),
    _arch("darknet53", "classic", "DarkNet-53 (YOLOv3, GluonCV darknet53 layout), 1024 channels"),
    _arch(
        "efficientnet_lite0",
        "efficientnet",
        "EfficientNet-Lite0, 1280 channels; ImageNet weights shipped offline",
        pretrained=("imagenet",),
        weight_map=f"{_M}.efficientnet:weight_map",
    ),
    _arch(
        "efficientnet_lite1",
        "efficientnet",
        "EfficientNet-Lite1 (native 240 px), 1280 channels; ImageNet weights with tlkit-core[efficientnet-lite]",
        pretrained=("imagenet",),
        weight_map=f"{_M}.efficientnet:lite1_weight_map",
    ),
    _arch(
        "efficientnet_lite2",
        "efficientnet",
        "EfficientNet-Lite2 (native 260 px), 1280 channels; ImageNet weights with tlkit-core[efficientnet-lite]",
        pretrained=("imagenet",),
        weight_map=f"{_M}.efficientnet:lite2_weight_map",
    ),
)

# (architecture, named set) -> "module:function" returning the local file (shipped offline; no download)
PRETRAINED_FILES: dict[tuple[str, str], str] = {
    ("efficientnet_lite0", "imagenet"): f"{_M}.efficientnet:imagenet_weights_path",
    ("efficientnet_lite1", "imagenet"): f"{_M}.efficientnet:lite1_weights_path",
    ("efficientnet_lite2", "imagenet"): f"{_M}.efficientnet:lite2_weights_path",
}

# architecture -> "module:function" mapping the file's classifier tensors to the Dense head's names
HEAD_WEIGHT_MAPS: dict[str, str] = {f"efficientnet_lite{n}": f"{_M}.efficientnet:head_weight_map" for n in (0, 1, 2)}

# architecture -> the (H, W) its ImageNet weights were trained at (imagenet_classifier's default input)
IMAGENET_INPUT: dict[str, tuple[int, int]] = {
    "efficientnet_lite0": (224, 224),
    "efficientnet_lite1": (240, 240),
    "efficientnet_lite2": (260, 260),
}

# GluonCV model-store name -> (the backbone its ImageNet weights fill, "module:function" weight map or None
# when the names are the same): what `gluoncv://NAME` means for a tlkit backbone
GLUONCV_WEIGHTS: dict[str, tuple[str, str | None]] = {
    **{f"resnet{n}_v1": (f"resnet{n}", None) for n in (18, 34, 50, 101)},
    **{f"resnet{n}_v1b": (f"resnet{n}", f"{_M}.resnet:gluoncv_v1b_weight_map") for n in (18, 34)},
    **{name: (name[:5], None) for name in ("vgg16", "vgg16_bn", "vgg19", "vgg19_bn")},
    "mobilenet1.0": ("mobilenet_v1", None),
    "mobilenetv2_1.0": ("mobilenet_v2", None),
    "googlenet": ("googlenet", None),
    "darknet53": ("darknet53", None),
}

WEIGHT_FORMATS: tuple[WeightFormatSpec, ...] = (
    WeightFormatSpec(
        "tlkit",
        sniff="tlkit.weights:is_tlkit_model",
        load="tlkit.weights:load_tlkit_model",
        summary="tlkit model file (.tlk)",
    ),
    WeightFormatSpec(
        "mxnet-params",
        sniff="tlkit.weights:is_mxnet_params",
        load="tlkit.weights:load_mxnet_params",
        summary="MXNet nd.save file (.params): structural or arg:/aux: names",
    ),
    WeightFormatSpec(
        "pytorch-pth",
        sniff="tlkit.pth:is_pth",
        load="tlkit.pth:load_pth",
        summary="PyTorch state dict (.pth/.pt), read without torch; tensors only",
    ),
)
