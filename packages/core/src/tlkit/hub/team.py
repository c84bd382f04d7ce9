"""A team registry: a directory or an HTTP(S) URL (any static file server or object store) holding
`index.json` and the model files, versioned, with sha256, size and model card per version.

    index.json = {"format": "tlkit-registry", "format_version": 1,
                  "models": {"<name>": {"description": "...",
                                        "versions": {"<version>": {"file": "<name>/<version>/<file name>",
                                                                   "sha256": "...", "size": 123,
                                                                   "created": "...", "card": {...}}}}}}

File paths in the index are relative to the registry root, so the same tree works on disk, behind a web
server or in a bucket. Versions are immutable (push refuses an existing one unless forced); the latest
version is the highest by PEP 440 ordering (the newest push when versions are not all PEP 440).

Which registry: `--registry` > `$TLKIT_REGISTRY` > `registry:` in the user config file
(`$TLKIT_CONFIG`, else `$XDG_CONFIG_HOME/tlkit/config.yaml`, else `~/.config/tlkit/config.yaml`) > the
default directory `<cache>/registry` (`$TLKIT_CACHE`, else `$XDG_CACHE_HOME/tlkit`, else `~/.cache/tlkit`).

Push: into a directory (copy + index update under a file lock), or for an HTTP(S) registry with HTTP PUT of
the file, its card files and the updated index.json to `registry_upload:` (config file) /
`$TLKIT_REGISTRY_UPLOAD`, default the registry URL itself (WebDAV, an S3-compatible gateway, nginx
`dav_methods PUT`). A static server has no lock: of two concurrent HTTP pushes one index update can be
lost (its files are uploaded but not listed); push that one again.
Pulled files of an HTTP registry are cached under `<cache>/downloads/`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from tlkit.config import SpecModel
from tlkit.errors import ModelFileError, RegistryError, did_you_mean
from tlkit.io import atomic_write, atomic_write_text, file_digest

INDEX = "index.json"
FORMAT = "tlkit-registry"
FORMAT_VERSION = 1
SCHEME = "registry://"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# -- where the registry is ----------------------------------------------------------------------------------


class UserConfig(SpecModel):
    """The user config file (YAML)."""

    registry: Optional[str] = Field(None, description="team registry: a directory or an http(s):// URL")
    registry_upload: Optional[str] = Field(
        None, description="where `tlkit model push` uploads with HTTP PUT (default: the registry URL)"
    )


def config_path() -> Path:
    if os.environ.get("TLKIT_CONFIG"):
        return Path(os.environ["TLKIT_CONFIG"]).expanduser()
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser() / "tlkit" / "config.yaml"


def user_config() -> UserConfig:
    from tlkit.config import load_spec

    path = config_path()
    return load_spec(path, UserConfig) if path.is_file() else UserConfig()


def registry_location(flag: str | None = None) -> tuple[str, str]:
    """(location, where it was chosen) by the precedence in the module doc."""
    from tlkit.weights import cache_dir

    if flag:
        return str(flag), "--registry"
    if os.environ.get("TLKIT_REGISTRY"):
        return os.environ["TLKIT_REGISTRY"], "TLKIT_REGISTRY"
    cfg = user_config()
    if cfg.registry:
        return cfg.registry, str(config_path())
    return str(cache_dir() / "registry"), "default"


def open_registry(location: str | None = None) -> Registry:
    loc, _ = registry_location(location)
    upload = os.environ.get("TLKIT_REGISTRY_UPLOAD") or user_config().registry_upload
    return Registry(loc, upload=upload)


def split_ref(ref: str) -> tuple[str, str | None]:
    """ "name" or "name:version" (also with the registry:// scheme) -> (name, version or None)."""
    ref = ref.removeprefix(SCHEME)
    name, _, version = ref.partition(":")
    return name, version or None


# -- the index ---------------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One version of a model in a registry."""

    name: str
    version: str
    file: str  # relative to the registry root
    sha256: str
    size: int
    created: str = ""
    description: str = ""
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_index(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "size": self.size, "created": self.created, "card": self.card}


def _empty_index() -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "models": {}}


def _version_key(entries: list[Entry]) -> Any:
    from packaging.version import InvalidVersion, Version

    try:
        versions = {e.version: Version(e.version) for e in entries}
        return lambda e: versions[e.version]
    except InvalidVersion:
        return lambda e: e.created


def _next_version(existing: list[str]) -> str:
    if not existing:
        return "1"
    if all(v.isdigit() for v in existing):
        return str(max(int(v) for v in existing) + 1)
    raise RegistryError(f"give --version: the existing versions ({', '.join(sorted(existing))}) are not plain numbers")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created) for the duration: one push updates index.json at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Registry:
    """A team registry at a directory (or file:// URL) or an http(s):// URL (see the module doc)."""

    def __init__(self, location: str, upload: str | None = None):
        self.location = str(location)
        self.is_http = self.location.startswith(("http://", "https://"))
        self.root = None if self.is_http else Path(self.location.removeprefix("file://")).expanduser()
        self.upload = upload or (self.location if self.is_http else None)

    def __repr__(self) -> str:
        return f"Registry({self.location})"

    @property
    def _folder(self) -> Path:
        """The directory of a directory registry (the code that uses it has checked `not self.is_http`)."""
        assert self.root is not None, f"{self.location}: an http(s) registry has no directory"
        return self.root

    # -- reading ------------------------------------------------------------------------------------------------

    def _url(self, rel: str, base: str | None = None) -> str:
        return (base or self.location).rstrip("/") + "/" + rel

    def index(self) -> dict[str, Any]:
        """The parsed index.json (an empty index for a directory that has none yet)."""
        from tlkit.hub.download import read_url

        where = self._url(INDEX) if self.is_http else str(self._folder / INDEX)
        if self.is_http:
            try:
                raw = read_url(where)
            except RegistryError as err:
                if "HTTP 404" in str(err):
                    return _empty_index()
                raise
        else:
            path = self._folder / INDEX
            if not path.is_file():
                if self._folder.exists() and not self._folder.is_dir():
                    raise RegistryError(f"{self.root}: a team registry must be a directory or an http(s) URL")
                return _empty_index()
            raw = path.read_bytes()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RegistryError(f"{where}: not valid JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("models"), dict):
            raise RegistryError(f'{where}: not a tlkit registry index (expected "format": "{FORMAT}" and "models")')
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise RegistryError(
                f"{where}: written by a newer tlkit (format_version {data['format_version']}); upgrade tlkit-core"
            )
        return data

    def entries(self, index: dict[str, Any] | None = None) -> list[Entry]:
        index = self.index() if index is None else index
        out = []
        for name, model in sorted(index["models"].items()):
            for version, v in model.get("versions", {}).items():
                try:
                    entry = Entry(
                        name,
                        version,
                        v["file"],
                        v["sha256"],
                        int(v["size"]),
                        v.get("created", ""),
                        model.get("description", ""),
                        v.get("card") or {},
                    )
                except (KeyError, TypeError, ValueError) as err:
                    raise RegistryError(
                        f"{self.location}: index entry {name}:{version} is incomplete ({err})"
                    ) from None
                rel = Path(entry.file)
                if rel.is_absolute() or ".." in rel.parts:  # files stay inside the registry (and the cache)
                    raise RegistryError(
                        f"{self.location}: index entry {entry.ref} points outside the registry: {entry.file}"
                    )
                out.append(entry)
        return out

    def find(self, name: str, version: str | None = None) -> Entry:
        """`name` at `version` (default: the latest)."""
        entries = self.entries()
        found = [e for e in entries if e.name == name]
        if not found:
            names = sorted({e.name for e in entries})
            raise RegistryError(
                f"no model {name!r} in the registry {self.location}{did_you_mean(name, names)}; "
                f"models: {', '.join(names) or '(none)'}"
            )
        if version is None:
            return max(found, key=_version_key(found))
        for e in found:
            if e.version == version:
                return e
        raise RegistryError(
            f"{name}: no version {version!r} in {self.location}; versions: "
            + ", ".join(e.version for e in sorted(found, key=_version_key(found)))
        )

    # -- pull / verify --------------------------------------------------------------------------------------------

    def cached_path(self, entry: Entry) -> Path:
        """Where a file of this registry is on disk: in place for a directory, in the cache for HTTP."""
        if not self.is_http:
            return self._folder / entry.file
        from tlkit.weights import cache_dir

        site = hashlib.sha256(self.location.encode()).hexdigest()[:12]
        return cache_dir() / "downloads" / site / entry.file

    def pull(self, name: str, version: str | None = None, *, progress=None) -> Path:
        """The local file of `name[:version]`: checked (size, sha256) in a directory registry, downloaded
        (resumable, checked) into the cache from an HTTP one."""
        from tlkit.hub.download import fetch
        from tlkit.weights import offline

        entry = self.find(name, version)
        path = self.cached_path(entry)
        if not self.is_http:
            problem = _check_file(path, entry)
            if problem:
                raise ModelFileError(f"{entry.ref} in {self.location}: {problem}")
            return path
        if path.is_file() and path.stat().st_size == entry.size:  # checked when it was downloaded
            return path
        if offline():
            raise ModelFileError(f"{SCHEME}{entry.ref}: not downloaded yet ({path}) and TLKIT_OFFLINE is set")
        return fetch(self._url(entry.file), path, sha256=entry.sha256, size=entry.size, progress=progress)

    def verify(self, name: str | None = None, version: str | None = None) -> list[tuple[Entry, str | None]]:
        """(entry, None if its local file has the indexed size and sha256 else what is wrong) for one
        version, every version of `name`, or the whole registry. HTTP: the pulled copies."""
        if name is not None and version is not None:
            entries = [self.find(name, version)]
        else:
            entries = [e for e in self.entries() if name is None or e.name == name]
            if name is not None and not entries:
                self.find(name)  # raises "unknown model"
        return [(e, _check_file(self.cached_path(e), e)) for e in entries]

    # -- push ------------------------------------------------------------------------------------------------------

    def push(
        self,
        path: str | os.PathLike,
        name: str,
        version: str | None = None,
        *,
        description: str = "",
        force: bool = False,
    ) -> Entry:
        """Add a model file (.tlk or .onnx, with its card) as `name:version` (default: the next number)."""
        from tlkit.model_card import now_utc, read_card, write_card_files

        src = Path(path)
        if not src.is_file():
            raise ModelFileError(f"{src}: model file not found")
        if not _NAME.fullmatch(name) or (version is not None and not _NAME.fullmatch(version)):
            raise RegistryError(f"model name {name!r} / version {version!r}: use letters, digits, '.', '_' and '-'")
        card = read_card(src)  # also refuses files that are not tlkit models
        sha, size = file_digest(src), src.stat().st_size
        if self.is_http:
            return self._push_http(src, name, version, description, force, card, sha, size, now_utc())
        with _locked(self._folder / ".index.lock"):
            index = self.index()
            version = self._check_new(index, name, version, force)
            entry = Entry(name, version, f"{name}/{version}/{src.name}", sha, size, now_utc(), description)
            dest = self._folder / entry.file
            with open(src, "rb") as fin, atomic_write(dest, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            entry.card = write_card_files(dest, card, sha).to_dict()
            self._add(index, entry)
            atomic_write_text(self._folder / INDEX, json.dumps(index, indent=2) + "\n")
        return entry

    def _check_new(self, index: dict[str, Any], name: str, version: str | None, force: bool) -> str:
        existing = list(index["models"].get(name, {}).get("versions", {}))
        version = version or _next_version(existing)
        if version in existing and not force:
            raise RegistryError(
                f"{name}:{version} is already in {self.location}; versions are immutable: "
                "push another --version (or --force to replace it)"
            )
        return version

    @staticmethod
    def _add(index: dict[str, Any], entry: Entry) -> None:
        model = index["models"].setdefault(entry.name, {"description": "", "versions": {}})
        if entry.description:
            model["description"] = entry.description
        model["versions"][entry.version] = entry.to_index()

    def _push_http(
        self,
        src: Path,
        name: str,
        version: str | None,
        description: str,
        force: bool,
        card: Any,
        sha: str,
        size: int,
        created: str,
    ) -> Entry:
        from tlkit.hub.download import put_bytes, put_file
        from tlkit.model_card import card_texts, with_file

        index = self.index()
        version = self._check_new(index, name, version, force)
        entry = Entry(name, version, f"{name}/{version}/{src.name}", sha, size, created, description)
        put_file(self._url(entry.file, self.upload), src)
        full = with_file(card, src, sha)
        for suffix, text in card_texts(full).items():
            put_bytes(self._url(entry.file + suffix, self.upload), text.encode())
        entry.card = full.to_dict()
        self._add(index, entry)
        put_bytes(self._url(INDEX, self.upload), (json.dumps(index, indent=2) + "\n").encode())
        return entry


def _check_file(path: Path, entry: Entry) -> str | None:
    """None when `path` has the entry's size and sha256, else what is wrong."""
    if not path.is_file():
        return f"file missing: {path}"
    size = path.stat().st_size
    if size != entry.size:
        return f"{path}: {size} bytes, the index says {entry.size}"
    got = file_digest(path)
    return None if got == entry.sha256 else f"{path}: sha256 {got}, the index says {entry.sha256}"
