"""Registries without the internet: GluonCV's store and team registries served from 127.0.0.1 (list, pull
with resume after a cut connection, checksum mismatch refused and the partial file removed, push to a
directory and over HTTP PUT, pull by version), registry selection, and the `tlkit model` commands."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest

from tlkit.errors import ChecksumError, ModelFileError, RegistryError, UnknownNameError
from tlkit.hub import download, gluoncv_store
from tlkit.hub.team import Registry, open_registry, registry_location, split_ref
from tlkit.io import file_digest
from tlkit.model_card import ModelCard, read_card
from tlkit.testing.plugins import run_tlkit
from tlkit.testing.registry_server import RegistryServer


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every path a registry may touch lives under tmp_path; retries do not wait."""
    for var in ("TLKIT_REGISTRY", "TLKIT_REGISTRY_UPLOAD", "TLKIT_REGISTRY_AUTH", "TLKIT_OFFLINE", "MXNET_GLUON_REPO"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TLKIT_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet"))
    monkeypatch.setattr(download, "RETRY_WAIT_S", 0.0)


def _model(path, seed=0, task="classification"):
    """A small real .tlk file with a card (random weights: content differs per seed)."""
    from tlkit.model_io import ModelFile, save_model

    rng = np.random.default_rng(seed)
    card = ModelCard(task=task, arch="resnet18", classes=["a", "b"])
    meta = {"task": task, "arch": "resnet18", "classes": ["a", "b"], "input_shape": [3, 32, 32], "card": card.to_dict()}
    save_model(path, ModelFile(meta, {"w": rng.standard_normal((64, 64)).astype(np.float32)}))
    return path


# -- downloads ------------------------------------------------------------------------------------------------


def test_fetch_resumes_a_part_file_with_a_range_request(tmp_path):
    data = np.random.default_rng(1).bytes(300_000)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.bin").write_bytes(data)
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    (tmp_path / "out" / "f.bin.part").write_bytes(data[:120_000])  # left by an interrupted run
    with RegistryServer(tmp_path / "srv") as srv:
        download.fetch(f"{srv.url}/f.bin", dest, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        assert [r[2] for r in srv.requests("GET", "/f.bin")] == ["bytes=120000-"]
    assert dest.read_bytes() == data and not (tmp_path / "out" / "f.bin.part").exists()


def test_fetch_starts_over_when_the_server_ignores_range(tmp_path):
    data = np.random.default_rng(2).bytes(50_000)
    (tmp_path / "f.bin").write_bytes(data)
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    (tmp_path / "out" / "f.bin.part").write_bytes(b"x" * 1000)  # not even a prefix of the file
    with RegistryServer(tmp_path, ranges=False) as srv:
        download.fetch(f"{srv.url}/f.bin", dest, sha256=hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data


def test_fetch_gives_up_with_the_bytes_kept_for_the_next_pull(tmp_path, monkeypatch):
    with RegistryServer(tmp_path) as srv:
        with pytest.raises(RegistryError, match=r"/missing.bin: HTTP 404"):
            download.fetch(f"{srv.url}/missing.bin", tmp_path / "m.bin")
    with pytest.raises(RegistryError, match=r"download failed after 1 retries \(.*\); 0 bytes kept in .*x\.bin\.part"):
        download.fetch("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", retries=1)  # port 9: nothing listens


# -- GluonCV's model store --------------------------------------------------------------------------------------


def test_store_table_is_gluoncvs_own():
    """Read from GluonCV's source without importing it: the same names and sha1s as the imported module."""
    from gluoncv.model_zoo.model_store import _model_sha1

    assert gluoncv_store.sha1_table() == _model_sha1
    assert gluoncv_store.url("resnet18_v1").endswith("gluon/models/resnet18_v1-a0666292.zip")
    assert gluoncv_store.kind("ssd_512_resnet50_v1_voc") == "detection"
    assert gluoncv_store.kind("simple_pose_resnet18_v1b") == "pose"
    assert gluoncv_store.kind("mobilenetv2_1.0") == "classification"
    with pytest.raises(UnknownNameError, match=r"unknown GluonCV pretrained model 'resnet18_v9'; did you mean"):
        gluoncv_store.checksum("resnet18_v9")


@pytest.fixture
def fake_store(tmp_path, monkeypatch):
    """gluoncv://resnet18_v1 served from 127.0.0.1: a zip of a real .params file, its sha1 in the table."""
    import mxnet as mx

    params = tmp_path / "p.params"
    mx.nd.save(str(params), {"features.0.weight": mx.nd.array(np.random.default_rng(3).standard_normal((64, 3, 7, 7)))})
    sha1 = file_digest(params, "sha1")
    monkeypatch.setitem(gluoncv_store.sha1_table(), "resnet18_v1", sha1)
    stem = f"resnet18_v1-{sha1[:8]}"
    srv_root = tmp_path / "store"
    (srv_root / "gluon" / "models").mkdir(parents=True)
    with zipfile.ZipFile(srv_root / "gluon" / "models" / f"{stem}.zip", "w") as zf:
        zf.write(params, f"{stem}.params")
    with RegistryServer(srv_root) as srv:
        monkeypatch.setenv("MXNET_GLUON_REPO", srv.url + "/")
        yield srv, params, f"/gluon/models/{stem}.zip"


def test_gluoncv_pull_resumes_after_a_cut_connection(fake_store, tmp_path):
    srv, params, zip_path = fake_store
    size = (srv.root / zip_path.lstrip("/")).stat().st_size
    srv.cut_after[zip_path] = size // 2
    path = gluoncv_store.pull("resnet18_v1")
    assert path == tmp_path / "mxnet" / "models" / f"resnet18_v1-{file_digest(params, 'sha1')[:8]}.params"
    assert path.read_bytes() == params.read_bytes()
    assert [r[2] for r in srv.requests("GET", zip_path)] == [None, f"bytes={size // 2}-"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # the zip is gone
    assert gluoncv_store.verify("resnet18_v1") is None
    assert gluoncv_store.pull("resnet18_v1") == path and len(srv.requests("GET", zip_path)) == 2  # cached


def test_gluoncv_checksum_mismatch_is_refused_and_nothing_is_left(fake_store, tmp_path, monkeypatch):
    srv, params, zip_path = fake_store
    good = gluoncv_store.sha1_table()["resnet18_v1"]
    # the published sha1 says one thing, the served archive holds another file under the same short name
    monkeypatch.setitem(gluoncv_store.sha1_table(), "resnet18_v1", good[:8] + "0" * 32)
    with pytest.raises(
        ChecksumError,
        match=r"gluoncv://resnet18_v1: downloaded resnet18_v1-\w+\.params has sha1 "
        rf"{good}, GluonCV publishes {good[:8]}0+; refused and deleted",
    ):
        gluoncv_store.pull("resnet18_v1")
    models = tmp_path / "mxnet" / "models"
    assert [p.name for p in models.iterdir()] == []  # no .params, no .zip, no .part, no temp file


def test_gluoncv_uri_in_a_training_spec_resolves_to_the_pulled_file(fake_store, monkeypatch):
    from tlkit.weights import resolve_weights

    path = resolve_weights("gluoncv://resnet18_v1")
    assert path.is_file() and path.parent.name == "models"
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    assert resolve_weights("gluoncv://resnet18_v1") == path  # present: no network needed
    with pytest.raises(ModelFileError, match=r"gluoncv://resnet34_v1: not in .* and TLKIT_OFFLINE is set"):
        resolve_weights("gluoncv://resnet34_v1")


# -- team registries ------------------------------------------------------------------------------------------------


def test_push_to_a_directory_and_pull_by_version(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    assert reg.entries() == []
    e1 = reg.push(_model(tmp_path / "a.tlk", 1), "peoplenet", description="people")
    e2 = reg.push(_model(tmp_path / "b.tlk", 2), "peoplenet")
    assert (e1.version, e2.version) == ("1", "2")
    index = json.loads((tmp_path / "reg" / "index.json").read_text())
    v1 = index["models"]["peoplenet"]["versions"]["1"]
    assert v1["file"] == "peoplenet/1/a.tlk" and v1["sha256"] == file_digest(tmp_path / "a.tlk")
    assert v1["size"] == (tmp_path / "a.tlk").stat().st_size and v1["card"]["task"] == "classification"
    assert v1["card"]["file"] == {"name": "a.tlk", "size": v1["size"], "sha256": v1["sha256"]}
    assert index["models"]["peoplenet"]["description"] == "people"
    assert (tmp_path / "reg" / "peoplenet" / "1" / "a.tlk.MODEL_CARD.md").is_file()
    assert reg.find("peoplenet").version == "2"  # latest
    assert file_digest(reg.pull("peoplenet", "1")) == file_digest(tmp_path / "a.tlk")
    with pytest.raises(RegistryError, match=r"peoplenet:2 is already in .*versions are immutable"):
        reg.push(tmp_path / "a.tlk", "peoplenet", "2")
    reg.push(tmp_path / "a.tlk", "peoplenet", "2", force=True)
    assert reg.find("peoplenet", "2").sha256 == e1.sha256
    with pytest.raises(RegistryError, match=r"peoplenet: no version '7' in .*; versions: 1, 2"):
        reg.pull("peoplenet", "7")
    with pytest.raises(
        RegistryError,
        match=r"no model 'peoplenett' in the registry .* \(did you mean 'peoplenet'\?\); "
        r"models: peoplenet",
    ):
        reg.find("peoplenett")


def test_latest_version_is_the_highest_pep440_version(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    for v, seed in (("1.10", 1), ("1.9", 2), ("1.2.1", 3)):
        reg.push(_model(tmp_path / f"{seed}.tlk", seed), "m", v)
    assert reg.find("m").version == "1.10"
    with pytest.raises(RegistryError, match=r"give --version: the existing versions \(1.10, 1.2.1, 1.9\)"):
        reg.push(tmp_path / "1.tlk", "m")


def test_a_tampered_file_in_a_directory_registry_is_reported(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    reg.push(_model(tmp_path / "a.tlk"), "m")
    stored = tmp_path / "reg" / "m" / "1" / "a.tlk"
    raw = bytearray(stored.read_bytes())
    raw[-10] ^= 0xFF
    stored.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match=r"m:1 in .*: .*a\.tlk: sha256 \w+, the index says"):
        reg.pull("m")
    [(entry, problem)] = reg.verify()
    assert entry.ref == "m:1" and "the index says" in problem


def test_http_registry_list_and_pull_by_version_with_resume(tmp_path):
    reg_dir = Registry(str(tmp_path / "reg"))
    reg_dir.push(_model(tmp_path / "a.tlk", 1), "m")
    reg_dir.push(_model(tmp_path / "b.tlk", 2), "m")
    with RegistryServer(tmp_path / "reg") as srv:
        reg = Registry(srv.url)
        assert [e.ref for e in reg.entries()] == ["m:1", "m:2"]
        srv.cut_after["/m/1/a.tlk"] = 5000
        path = reg.pull("m", "1")
        assert file_digest(path) == file_digest(tmp_path / "a.tlk")
        assert [r[2] for r in srv.requests("GET", "/m/1/a.tlk")] == [None, "bytes=5000-"]
        assert str(path).startswith(str(tmp_path / "cache" / "downloads"))
        assert reg.pull("m", "1") == path and len(srv.requests("GET", "/m/1/a.tlk")) == 2  # cached
        assert file_digest(reg.pull("m")) == file_digest(tmp_path / "b.tlk")


def test_http_pull_checksum_mismatch_removes_the_partial_file(tmp_path):
    reg_dir = Registry(str(tmp_path / "reg"))
    reg_dir.push(_model(tmp_path / "a.tlk"), "m")
    served = tmp_path / "reg" / "m" / "1" / "a.tlk"
    raw = bytearray(served.read_bytes())
    raw[100] ^= 0xFF  # same size, other bytes
    served.write_bytes(bytes(raw))
    with RegistryServer(tmp_path / "reg") as srv:
        reg = Registry(srv.url)
        with pytest.raises(
            ChecksumError, match=r"/m/1/a\.tlk: downloaded file has sha256 \w+, expected \w+; refused and deleted"
        ):
            reg.pull("m")
        target = reg.cached_path(reg.find("m"))
    assert not target.exists() and not target.with_name(target.name + ".part").exists()


def test_push_over_http_put_with_the_configured_upload_url(tmp_path, monkeypatch):
    """Read from one URL, upload to another (a CDN + an upload endpoint), Authorization sent."""
    monkeypatch.setenv("TLKIT_REGISTRY_AUTH", "Bearer s3cret")
    root = tmp_path / "site"
    root.mkdir()
    with RegistryServer(root) as srv:
        reg = Registry(f"{srv.url}/models", upload=f"{srv.url}/models")
        entry = reg.push(_model(tmp_path / "a.tlk"), "m", "1.0")
        puts = [r[1] for r in srv.log if r[0] == "PUT"]
        assert puts == [
            "/models/m/1.0/a.tlk",
            "/models/m/1.0/a.tlk.MODEL_CARD.json",
            "/models/m/1.0/a.tlk.MODEL_CARD.md",
            "/models/index.json",
        ]
        assert {r[3] for r in srv.log} == {"Bearer s3cret"}
        assert (root / "models" / "m" / "1.0" / "a.tlk").read_bytes() == (tmp_path / "a.tlk").read_bytes()
        assert reg.find("m").sha256 == entry.sha256 == file_digest(tmp_path / "a.tlk")
        reg.push(_model(tmp_path / "b.tlk", 5), "m", "1.1")
        assert [e.version for e in Registry(f"{srv.url}/models").entries()] == ["1.0", "1.1"]


def test_registry_selection_flag_env_config_default(tmp_path, monkeypatch):
    monkeypatch.delenv("TLKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry_location() == (str(tmp_path / "xdg" / "tlkit" / "registry"), "default")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("registry: https://models.example.com/tlkit\nregistry_upload: https://up.example.com/tlkit\n")
    monkeypatch.setenv("TLKIT_CONFIG", str(cfg))
    assert registry_location() == ("https://models.example.com/tlkit", str(cfg))
    assert open_registry().upload == "https://up.example.com/tlkit"
    monkeypatch.setenv("TLKIT_REGISTRY", str(tmp_path / "team"))
    assert registry_location() == (str(tmp_path / "team"), "TLKIT_REGISTRY")
    assert registry_location("/elsewhere") == ("/elsewhere", "--registry")
    cfg.write_text("registy: x\n")
    monkeypatch.delenv("TLKIT_REGISTRY")
    from tlkit.errors import SpecError

    with pytest.raises(SpecError, match=r"config\.yaml:1: registy: unknown key \(did you mean 'registry'\?\)"):
        registry_location()


def test_an_index_cannot_point_outside_the_registry(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    reg.push(_model(tmp_path / "a.tlk"), "m")
    index = json.loads((tmp_path / "reg" / "index.json").read_text())
    index["models"]["m"]["versions"]["1"]["file"] = "../../home/user/.bashrc"
    (tmp_path / "reg" / "index.json").write_text(json.dumps(index))
    with pytest.raises(RegistryError, match=r"index entry m:1 points outside the registry: \.\./\.\./home"):
        reg.pull("m")
    (tmp_path / "reg" / "index.json").write_text('{"format": "something-else"}')
    with pytest.raises(RegistryError, match=r"index\.json: not a tlkit registry index"):
        reg.entries()


def test_split_ref():
    assert split_ref("registry://peoplenet:2.1") == ("peoplenet", "2.1")
    assert split_ref("peoplenet") == ("peoplenet", None)


def test_registry_uri_resolves_for_training(tmp_path, monkeypatch):
    from tlkit.weights import resolve_weights

    monkeypatch.setenv("TLKIT_REGISTRY", str(tmp_path / "reg"))
    Registry(str(tmp_path / "reg")).push(_model(tmp_path / "a.tlk"), "base")
    assert resolve_weights("registry://base:1") == tmp_path / "reg" / "base" / "1" / "a.tlk"


# -- the commands ----------------------------------------------------------------------------------------------------


def test_model_commands_end_to_end(tmp_path):
    env = {"TLKIT_REGISTRY": str(tmp_path / "reg")}
    _model(tmp_path / "a.tlk")
    r = run_tlkit(
        ["model", "push", str(tmp_path / "a.tlk"), "--name", "cls", "--version", "1.0", "-d", "demo"], env=env
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"pushed cls:1.0 to {tmp_path / 'reg'}")
    rows = json.loads(run_tlkit(["model", "list", "--json"], env=env).stdout)
    sources = {r["source"] for r in rows}
    assert sources == {"registry", "pypi", "gluoncv"}
    assert [r["name"] for r in rows if r["source"] == "registry"] == ["cls:1.0"]
    assert {"gluoncv://resnet18_v1b", "gluoncv://ssd_512_resnet50_v1_voc"} <= {r["name"] for r in rows}
    assert len(json.loads(run_tlkit(["model", "list", "--json", "-s", "gluoncv", "-f", "yolo3"], env=env).stdout)) == 4
    info = json.loads(run_tlkit(["model", "info", "cls", "--json"], env=env).stdout)
    assert info["version"] == "1.0" and info["card"]["arch"] == "resnet18" and info["description"] == "demo"
    pulled = run_tlkit(["model", "pull", "cls:1.0"], env=env)
    assert pulled.returncode == 0 and pulled.stdout.strip() == str(tmp_path / "reg" / "cls" / "1.0" / "a.tlk")
    ok = run_tlkit(["model", "verify"], env=env)
    assert ok.returncode == 0 and f"ok       {tmp_path / 'reg'}: cls:1.0" in ok.stdout
    (tmp_path / "reg" / "cls" / "1.0" / "a.tlk").write_bytes(b"broken")
    bad = run_tlkit(["model", "verify", "cls:1.0"], env=env)
    assert bad.returncode == 1 and "FAILED" in bad.stdout and bad.stderr.strip() == "error: 1 of 1 checks failed"
    missing = run_tlkit(["model", "pull", "nosuch"], env=env)
    assert missing.returncode == 1 and missing.stderr.startswith("error: no model 'nosuch' in the registry")


def test_model_info_prints_the_card_of_a_file(tmp_path):
    _model(tmp_path / "a.tlk")
    r = run_tlkit(["model", "info", str(tmp_path / "a.tlk"), "--json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["classes"] == ["a", "b"]
    text = run_tlkit(["model", "info", str(tmp_path / "a.tlk")])
    assert "Model card: resnet18 classification" in text.stdout
    assert read_card(tmp_path / "a.tlk").arch == "resnet18"
