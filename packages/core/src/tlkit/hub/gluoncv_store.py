"""GluonCV's model store as a registry: its published names and sha1 checksums, downloaded the way GluonCV
does it, so GluonCV itself finds the files.

- names and checksums: the installed GluonCV's `model_zoo/model_store.py` table (`_model_sha1`), read from
  its source without importing GluonCV (which takes ~4 s and MXNet with it; `tlkit model list` stays fast);
- URL: `{repo}gluon/models/{name}-{sha1[:8]}.zip`, repo = `$MXNET_GLUON_REPO` (GluonCV's own variable) or
  Apache's S3 bucket;
- file: `$MXNET_HOME/models/{name}-{sha1[:8]}.params` (GluonCV's cache layout), extracted from the zip
  only when its sha1 is the published one.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import os
import zipfile
from pathlib import Path
from typing import Any

from tlkit.errors import ChecksumError, ModelFileError, RegistryError, UnknownNameError
from tlkit.io import file_digest, temp_file_beside
from tlkit.weights import mxnet_model_dir, offline

SCHEME = "gluoncv://"

# name prefix -> what the model does (GluonCV names say it); anything else is an ImageNet classifier
_KINDS = (
    (("ssd_", "yolo3_", "faster_rcnn_", "center_net_", "smot_"), "detection"),
    (("mask_rcnn_",), "instance segmentation"),
    (("fcn_", "psp_", "deeplab_", "icnet_", "fastscnn_", "danet_"), "segmentation"),
    (("simple_pose_", "alpha_pose_", "mobile_pose_"), "pose"),
    (("i3d_", "slowfast_", "c3d_", "p3d_", "r2plus1d_", "tsn_"), "action recognition"),
    (("siamrpn_",), "tracking"),
    (("monodepth2_",), "depth"),
    (("cifar_",), "classification (CIFAR-10)"),
)


@functools.cache
def _store() -> tuple[dict[str, str], str, str]:
    """(name -> sha1, default repository URL, URL format) of the installed GluonCV."""
    spec = importlib.util.find_spec("gluoncv")
    if spec is None or not spec.origin:
        raise RegistryError("gluoncv is not installed: its model store is not available")
    path = Path(spec.origin).parent / "model_zoo" / "model_store.py"
    try:
        found: dict[str, Any] = {}  # ast.literal_eval's values
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                key = node.targets[0].id
                # {name: checksum for checksum, name in [(sha1, name), ...]}
                if key == "_model_sha1" and isinstance(node.value, ast.DictComp):
                    found[key] = {n: c for c, n in ast.literal_eval(node.value.generators[0].iter)}
                elif key in ("apache_repo_url", "_url_format"):
                    found[key] = ast.literal_eval(node.value)
        return found["_model_sha1"], found["apache_repo_url"], found["_url_format"]
    except (OSError, SyntaxError, ValueError, KeyError, AttributeError, IndexError):  # another layout: import it
        from gluoncv.model_zoo import model_store

        return dict(model_store._model_sha1), model_store.apache_repo_url, model_store._url_format


def sha1_table() -> dict[str, str]:
    """name -> sha1 of every model GluonCV publishes."""
    return _store()[0]


def kind(name: str) -> str:
    if name.endswith(("_kinetics400", "_kinetics700", "_ucf101", "_hmdb51", "_sthsthv2")):
        return "action recognition"
    return next((k for prefixes, k in _KINDS if name.startswith(prefixes)), "classification")


def checksum(name: str) -> str:
    table = sha1_table()
    if name not in table:
        raise UnknownNameError(
            "GluonCV pretrained model", name, table, hint="`tlkit model list --source gluoncv` lists them."
        )
    return table[name]


def local_path(name: str) -> Path:
    """Where GluonCV (and tlkit) keep the file: $MXNET_HOME/models/{name}-{sha1[:8]}.params."""
    return mxnet_model_dir() / f"{name}-{checksum(name)[:8]}.params"


def url(name: str) -> str:
    _, default_repo, fmt = _store()
    repo = os.environ.get("MXNET_GLUON_REPO") or default_repo
    if not repo.endswith("/"):
        repo += "/"
    return fmt.format(repo_url=repo, file_name=local_path(name).stem)


def is_cached(name: str) -> bool:
    return local_path(name).is_file()


def pull(name: str, *, progress=None) -> Path:
    """The local file of `name`, downloaded (resumable) and checked against GluonCV's sha1 when missing or
    when the cached file does not match. Not with TLKIT_OFFLINE=1."""
    from tlkit.hub.download import fetch

    path, sha1 = local_path(name), checksum(name)
    if path.is_file() and file_digest(path, "sha1") == sha1:
        return path
    if offline():
        raise ModelFileError(f"{SCHEME}{name}: not in {path.parent} and TLKIT_OFFLINE is set; copy the file there")
    archive = fetch(url(name), path.with_suffix(".zip"), progress=progress)
    try:
        _extract_checked(archive, path, sha1)
    finally:
        archive.unlink(missing_ok=True)
    return path


def _extract_checked(archive: Path, path: Path, sha1: str) -> None:
    """Extract `path.name` from the zip into place, only if its sha1 is `sha1` (else nothing is left)."""
    tmp = temp_file_beside(path)
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(path.name) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        got = file_digest(tmp, "sha1")
        if got != sha1:
            raise ChecksumError(
                f"{SCHEME}{path.stem.rsplit('-', 1)[0]}: downloaded {path.name} has sha1 {got}, "
                f"GluonCV publishes {sha1}; refused and deleted"
            )
        os.replace(tmp, path)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ChecksumError(f"{archive}: not a GluonCV model archive holding {path.name} ({err}); deleted") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def verify(name: str) -> str | None:
    """None when the cached file of `name` has GluonCV's sha1, else what is wrong."""
    path = local_path(name)
    if not path.is_file():
        return f"not downloaded ({path})"
    got = file_digest(path, "sha1")
    return None if got == checksum(name) else f"{path}: sha1 {got}, GluonCV publishes {checksum(name)}"


def cached_names() -> list[str]:
    """Store names whose file (with the published short hash) is in $MXNET_HOME/models."""
    return [name for name in sorted(sha1_table()) if local_path(name).is_file()]
