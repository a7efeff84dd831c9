"""Per-epoch metrics: JSONL (source of truth), CSV (flattened, for spreadsheets), TensorBoard when installed."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from kdlab._io import atomic_write_text, write_error


def flatten(record: dict[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a/b": 1}`` (``sep`` between the levels)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}{sep}", sep))
        else:
            flat[name] = value
    return flat


class MetricsLog:
    """Appends one JSON line per epoch. On resume, ``truncate(epoch)`` drops lines newer than the checkpoint
    (written before a kill, after the last checkpoint), so the log matches the resumed state exactly."""

    def __init__(self, out_dir: str | Path, tensorboard: bool | str = "auto"):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / "metrics.jsonl"
        self.csv = self.dir / "metrics.csv"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.dir / "tensorboard"))
            except ImportError:
                if tensorboard is True:
                    raise ImportError("tensorboard=true but the tensorboard package is not installed: "
                                      "pip install 'kdlab[tensorboard]'") from None

    def records(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        out = []
        for line in self.jsonl.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is stale anyway
        return out

    def truncate(self, last_epoch: int) -> list[dict[str, Any]]:
        kept = [r for r in self.records() if r.get("epoch", 0) <= last_epoch]
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in kept))
        self._write_csv(kept)
        return kept

    def append(self, record: dict[str, Any]) -> None:
        try:
            with open(self.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:  # a cut last line is dropped by records() and undone by truncate() on resume
            raise write_error(self.jsonl, exc) from None
        self._write_csv(self.records())
        if self._tb is not None:
            step = record.get("epoch", 0)
            for key, value in flatten(record).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def _write_csv(self, records: list[dict[str, Any]]) -> None:
        # one number per cell: lists (the last epoch's per-bin fidelity) stay in the JSONL only
        rows = [{k: v for k, v in flatten(r).items() if not isinstance(v, list)} for r in records]
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.csv, buf.getvalue())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
