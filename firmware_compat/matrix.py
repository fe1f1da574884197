"""The compatibility matrix: which model versions each firmware can run (the reference article's table).

File format (JSON; example in ``config/compat_matrix.example.json``)::

    {"models": {"detector": {"fw_1.6.0": ["1.0.0", "1.1.0"],
                             "fw_1.8.0": ["1.0.0", "1.1.0", "2.0.0"]}}}

A row lists the model versions supported from that firmware on. A firmware not listed uses the
row of the nearest lower listed firmware (firmware 1.9.3 above uses the ``fw_1.8.0`` row); a
firmware below every row supports nothing of that model. A model absent from the matrix is not
restricted by it (the manifest's own ``min_firmware``/``max_firmware`` still apply).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firmware_compat.version import Version, VersionError, parse_version


class MatrixError(ValueError):
    """A matrix file that does not follow the format; the message names the entry."""


@dataclass(frozen=True)
class CompatMatrix:
    # model_id -> rows sorted by firmware: (firmware, frozenset of supported model versions)
    rows: Mapping[str, tuple[tuple[Version, frozenset[Version]], ...]]

    @classmethod
    def from_json(cls, doc: Any) -> CompatMatrix:
        models = doc.get("models") if isinstance(doc, dict) else None
        if not isinstance(models, dict):
            raise MatrixError('models: expected {"<model id>": {"<firmware>": ["<model version>", ...]}}')
        rows: dict[str, tuple[tuple[Version, frozenset[Version]], ...]] = {}
        for model_id, table in models.items():
            if not isinstance(table, dict):
                raise MatrixError(f"models.{model_id}: expected an object of firmware -> model versions")
            out = []
            for fw, versions in table.items():
                where = f"models.{model_id}.{fw}"
                if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
                    raise MatrixError(f"{where}: expected a list of model version strings")
                try:
                    out.append((parse_version(fw), frozenset(parse_version(v) for v in versions)))
                except VersionError as exc:
                    raise MatrixError(f"{where}: {exc}") from exc
            rows[model_id] = tuple(sorted(out, key=lambda r: r[0].sort_key()))
        return cls(rows)

    def row(self, model_id: str, firmware: Version) -> frozenset[Version] | None:
        """Supported versions for this firmware; None when the matrix says nothing of the model."""
        table = self.rows.get(model_id)
        if table is None:
            return None
        found: frozenset[Version] = frozenset()
        for fw, versions in table:
            if fw <= firmware:
                found = versions
            else:
                break
        return found

    def supported(self, model_id: str, firmware: Version, model_version: Version) -> bool:
        row = self.row(model_id, firmware)
        return row is None or model_version in row


def parse_matrix(data: bytes, name: str = "matrix") -> CompatMatrix:
    """A matrix file's bytes; raises :class:`MatrixError` naming ``name`` and the entry."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise MatrixError(f"{name}: not valid JSON ({exc})") from exc
    try:
        return CompatMatrix.from_json(doc)
    except MatrixError as exc:
        raise MatrixError(f"{name}: {exc}") from exc
