"""Bad input gives a TlkitError with one specific line, never an MXNet traceback or a silent result."""

import io
import pickle
import zipfile

import pytest

from tlkit.errors import DataError, ModelFileError, SpecError, TlkitError


def one_line(err):
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def test_train_missing_dataset_dir(tmp_path, spec_for, make_ctx):
    from tlkit_classification.train import run

    cfg = spec_for(tmp_path / "nowhere")
    with pytest.raises(DataError) as e:
        run(make_ctx("train", cfg, results_dir=tmp_path / "r"))
    assert one_line(e) == f"dataset_config.train_dataset_path {tmp_path / 'nowhere' / 'train'}: directory not found"


def test_train_without_dataset_path(tmp_path, make_ctx):
    from tlkit.config import load_spec
    from tlkit_classification.config import ClassificationConfig
    from tlkit_classification.train import run

    with pytest.raises(DataError, match=r"dataset_config.train_dataset_path: no dataset path given in the spec") as e:
        run(make_ctx("train", load_spec(None, ClassificationConfig), results_dir=tmp_path / "r"))
    one_line(e)


def test_train_empty_class_folder(shapes, tmp_path, spec_for, make_ctx):
    import shutil

    from tlkit_classification.train import run

    shutil.copytree(shapes / "train", tmp_path / "d" / "train")
    shutil.copytree(shapes / "val", tmp_path / "d" / "val")
    (tmp_path / "d" / "train" / "star").mkdir()
    with pytest.raises(DataError) as e:
        run(make_ctx("train", spec_for(tmp_path / "d"), results_dir=tmp_path / "r"))
    assert one_line(e).startswith(f"{tmp_path / 'd' / 'train' / 'star'}: class folder has no images")


def _fake_pth(path, obj):
    buf = io.BytesIO()
    pickle.dump(obj, buf, protocol=2)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
    return path


def test_pretrained_pth_without_tensors(shapes, tmp_path, spec_for, make_ctx):
    from tlkit_classification.train import run

    pth = _fake_pth(tmp_path / "weights.pth", {"epoch": 3, "note": "no tensors here"})
    cfg = spec_for(shapes, "model_config.arch=resnet18", f"train_config.pretrained_model_path={pth}")
    with pytest.raises(ModelFileError) as e:
        run(make_ctx("train", cfg, results_dir=tmp_path / "r"))
    assert one_line(e) == f"{pth}: no tensors found (expected a state dict of name -> tensor)"


def test_pretrained_pth_with_code_is_refused(shapes, tmp_path, spec_for, make_ctx):
    from tlkit_classification.train import run

    pth = _fake_pth(tmp_path / "evil.pth", {"w": print})  # pickles a reference to builtins.print
    cfg = spec_for(shapes, "model_config.arch=resnet18", f"train_config.pretrained_model_path={pth}")
    with pytest.raises(ModelFileError, match=r"refusing to unpickle global '(__builtin__|builtins)\.print'") as e:
        run(make_ctx("train", cfg, results_dir=tmp_path / "r"))
    one_line(e)


def test_pretrained_weights_of_another_architecture(shapes, tmp_path, spec_for, make_ctx):
    """ImageNet EfficientNet weights into a ResNet: nothing matches -> an error, not a silent random init."""
    from tlkit.backbones.efficientnet import imagenet_weights_path
    from tlkit_classification.train import run

    cfg = spec_for(
        shapes, "model_config.arch=resnet18", f"train_config.pretrained_model_path={imagenet_weights_path()}"
    )
    with pytest.raises(ModelFileError, match=r"no tensor matched the network \(resnet18\)") as e:
        run(make_ctx("train", cfg, results_dir=tmp_path / "r"))
    one_line(e)


def test_unknown_architecture_suggests(shapes, tmp_path, spec_for, make_ctx):
    from tlkit_classification.train import run

    with pytest.raises(TlkitError, match=r"unknown architecture 'resnet19'; did you mean 'resnet18'") as e:
        run(make_ctx("train", spec_for(shapes, "model_config.arch=resnet19"), results_dir=tmp_path / "r"))
    one_line(e)


def test_retain_head_needs_imagenet_classes(shapes, tmp_path, spec_for, make_ctx):
    from tlkit_classification.train import run

    with pytest.raises(SpecError, match="retain_head: true keeps the 1000-class ImageNet head, but the dataset has 3"):
        run(make_ctx("train", spec_for(shapes, "model_config.retain_head=true"), results_dir=tmp_path / "r"))


def test_load_graph_needs_a_graph_file(shapes, tmp_path, spec_for, make_ctx):
    from tlkit_classification.train import run

    cfg = spec_for(shapes, "train_config.load_graph=true")
    with pytest.raises(SpecError, match="load_graph: true needs train_config.pretrained_model_path"):
        run(make_ctx("train", cfg, results_dir=tmp_path / "r"))


def test_inference_on_a_non_image(tmp_path, make_ctx):
    from tlkit_classification.inference import run

    note = tmp_path / "notes.jpg"
    note.write_text("I am text")
    model = tmp_path / "m.tlk"
    model.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match=r"m\.tlk: not a tlkit model file") as e:
        run(make_ctx("inference", results_dir=tmp_path, model=model, image=note))
    one_line(e)
    with pytest.raises(
        TlkitError,
        match=r"give exactly one of -i/--image, -d/--image_dir \(an image, a folder of "
        r"images or a \.txt list of images\)$",
    ):  # classification reads no video
        run(make_ctx("inference", results_dir=tmp_path, model=model, image=note, image_dir=tmp_path))


def test_evaluate_needs_model_and_data(tmp_path, make_ctx):
    from tlkit.config import load_spec
    from tlkit_classification.config import ClassificationConfig
    from tlkit_classification.evaluate import run

    cfg = load_spec(None, ClassificationConfig)
    with pytest.raises(SpecError, match="evaluate: no model; pass -m"):
        run(make_ctx("evaluate", cfg, results_dir=tmp_path))
