"""Registered models in the data folder: ``models/<name>/v<N>/`` with ``model.json`` and ``meta.json``.

The metadata holds the version, the feature list (and the feature definitions' version), the training
window, the hash of the training data, the parameters and the validation metrics. Loading compares the
feature list with the one the caller will feed: a model trained on other features is refused
(:class:`FeatureListMismatch`) rather than fed columns in the wrong order. Only JSON is stored (no pickles).
"""

from __future__ import annotations

import builtins  # ``ModelRegistry.list`` shadows the builtin in the class body's annotations
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.ml.features import FEATURE_NAMES, FEATURE_VERSION
from engine.ml.models import Classifier

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


class RegistryError(ValueError):
    """A model is missing, unreadable or named badly."""


class FeatureListMismatch(RegistryError):
    """The model was trained on a different feature list than the one offered at load."""


@dataclass(frozen=True)
class ModelRecord:
    name: str
    version: int
    path: Path
    meta: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        m = self.meta
        metrics = m.get("metrics", {})
        return {"name": self.name, "version": self.version, "kind": m.get("kind"), "symbol": m.get("symbol"),
                "strategy": m.get("strategy"), "created_at": m.get("created_at"),
                "training_window": m.get("training_window"), "data_hash": m.get("data_hash"),
                "features": len(m.get("features", [])), "auc": metrics.get("auc"),
                "auc_ci": metrics.get("auc_ci"), "verdict": metrics.get("verdict"), "path": str(self.path)}


class ModelRegistry:
    """Versioned models under ``root`` (the app's ``AppPaths.models_dir``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _check_name(self, name: str) -> None:
        if not NAME_RE.match(name):
            raise RegistryError(f"model name {name!r}: use letters, digits, '_', '-' or '.' (up to 81)")

    def versions(self, name: str) -> list[int]:
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(int(p.name[1:]) for p in d.iterdir() if re.fullmatch(r"v\d+", p.name)
                      and (p / "meta.json").exists())

    def save(self, name: str, model: Classifier, meta: dict[str, Any]) -> ModelRecord:
        """Store ``model`` as the next version of ``name``; written to a temporary folder, then renamed."""
        self._check_name(name)
        version = (self.versions(name) or [0])[-1] + 1
        final = self.root / name / f"v{version}"
        tmp = self.root / name / f".v{version}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        meta = dict(meta) | {"name": name, "version": version, "kind": model.kind,
                             "feature_version": meta.get("feature_version", FEATURE_VERSION)}
        (tmp / "model.json").write_text(json.dumps(model.to_state()))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        tmp.rename(final)
        return ModelRecord(name, version, final, meta)

    def list(self) -> list[ModelRecord]:
        out: list[ModelRecord] = []
        if not self.root.is_dir():
            return out
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for v in self.versions(d.name):
                out.append(self.record(d.name, v))
        return out

    def record(self, name: str, version: int | None = None) -> ModelRecord:
        self._check_name(name)
        vs = self.versions(name)
        if not vs:
            raise RegistryError(f"no model named {name!r} in {self.root}")
        v = vs[-1] if version is None else version
        if v not in vs:
            raise RegistryError(f"model {name!r} has no version {v} (versions: {', '.join(map(str, vs))})")
        path = self.root / name / f"v{v}"
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path / 'meta.json'} is unreadable: {exc}") from None
        return ModelRecord(name, v, path, meta)

    def load(self, name: str, version: int | None = None, *,
             features: tuple[str, ...] | builtins.list[str] = FEATURE_NAMES) -> tuple[Classifier, ModelRecord]:
        """The model and its record; :class:`FeatureListMismatch` when it was trained on other features."""
        rec = self.record(name, version)
        trained = list(rec.meta.get("features", []))
        offered = list(features)
        if trained != offered or rec.meta.get("feature_version") != FEATURE_VERSION:
            missing = [f for f in trained if f not in offered]
            extra = [f for f in offered if f not in trained]
            detail = (f"missing {missing}" if missing else "") + (f" new {extra}" if extra else "")
            if not detail:
                detail = ("feature order or definitions version differ "
                          f"(model v{rec.meta.get('feature_version')}, now v{FEATURE_VERSION})")
            raise FeatureListMismatch(f"model {name} v{rec.version} was trained on another feature list: "
                                      f"{detail.strip()}; retrain it with `optiondesk ml train`")
        try:
            state = json.loads((rec.path / "model.json").read_text())
            return Classifier.from_state(state), rec
        except (OSError, ValueError, KeyError) as exc:
            raise RegistryError(f"{rec.path / 'model.json'} is unreadable: {exc}") from None
