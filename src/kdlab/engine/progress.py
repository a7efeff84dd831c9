"""What a run shows while it trains: progress bars on a terminal, plain lines in a log file.

On a TTY the epoch and step bars redraw in place (tqdm). Redirected to a file (a cluster job's log), redraws would
pile up as carriage returns, so instead one plain line per epoch (epoch, lr, loss terms, train and test accuracy,
teacher agreement, time), and within an epoch a line every :data:`HEARTBEAT_S` seconds, so a long epoch is never
hours of silence.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from kdlab._bar import tqdm

__all__ = ["HEARTBEAT_S", "Progress", "epoch_line"]

#: seconds between two lines inside an epoch when the output is not a terminal
HEARTBEAT_S = 300.0


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One plain line for an epoch's record: ``epoch 3/20 lr 0.05 loss 1.234 (ce 0.2, kd 1.0) train acc ...``."""
    train = record.get("train", {})
    terms = ", ".join(f"{k[5:]} {v:.4g}" for k, v in train.items() if k.startswith("loss_"))
    parts = [f"epoch {record['epoch']}/{epochs}", f"lr {record['lr']:.4g}",
             f"loss {train.get('loss', float('nan')):.4f}" + (f" ({terms})" if terms else ""),
             f"train acc {train.get('acc', float('nan')):.2f}%"]
    test = record.get("test")
    if test is not None:
        parts.append(f"test acc {test['student_acc']:.2f}%")
        if "agreement" in test:
            parts.append(f"agreement {test['agreement']:.2f}%")
    elif "agreement" in train:
        parts.append(f"train agreement {train['agreement']:.2f}%")
    if "epoch_time_s" in record:
        parts.append(f"{record['epoch_time_s']:.1f} s")
    return "  ".join(parts)


class Progress:
    """Bars on a terminal, lines elsewhere; nothing when ``enabled`` is False."""

    def __init__(self, enabled: bool, epochs: int, stream: TextIO | None = None):
        self.enabled, self.epochs = enabled, epochs
        self.stream = stream if stream is not None else sys.stderr
        self.tty = enabled and _isatty(self.stream)
        self._bar = None

    def over_epochs(self, first: int) -> Iterable[int]:
        epochs = range(first, self.epochs + 1)
        if not self.tty:
            return epochs
        self._bar = tqdm(epochs, desc="epochs", initial=first - 1, total=self.epochs, file=self.stream,
                         dynamic_ncols=True)
        return self._bar

    def over_steps(self, loader, epoch: int) -> Iterable:
        if self.tty:
            return tqdm(loader, desc=f"epoch {epoch}", leave=False, file=self.stream, dynamic_ncols=True)
        if self.enabled:
            return self._heartbeat(loader, epoch)
        return loader

    def _heartbeat(self, loader, epoch: int) -> Iterator:
        total = len(loader) if hasattr(loader, "__len__") else None
        start = last = time.monotonic()
        for step, batch in enumerate(loader, 1):
            yield batch
            now = time.monotonic()
            if now - last >= HEARTBEAT_S:
                last = now
                of = f"/{total}" if total is not None else ""
                self.write(f"epoch {epoch}/{self.epochs}: step {step}{of}, {now - start:.0f} s")

    def epoch_done(self, record: dict[str, Any]) -> None:
        if self._bar is not None:
            postfix = {"loss": f"{record['train']['loss']:.3f}"}
            if "test" in record:
                postfix["test_acc"] = f"{record['test']['student_acc']:.2f}"
            self._bar.set_postfix(postfix)
        elif self.enabled:
            self.write(epoch_line(record, self.epochs))

    def write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
