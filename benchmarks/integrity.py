"""What the content checksums of stored inputs cost: reading a teacher-output store's rows with and without their
per-row check, the checksums a build writes, the store's content identity, and the SHA-256 of the exact cache's table.

    python benchmarks/integrity.py            # 1000 classes, 16,384 images, batches of 256, 7 interleaved rounds
    python benchmarks/integrity.py --quick    # 2,048 images, 2 rounds: a smoke run

Run time on 2 CPU cores: full ~1 min, --quick ~5 s.

1. A one-epoch store of each precision (float32, float16, top-10) of ImageNet's width (1000 classes) is laid out with
   ``TeacherStore.create`` and filled with random logits through ``TeacherStore.write`` in chunks of 256 (the build
   path: each chunk's rows are converted, written, and their CRC-32s computed and written; no teacher, no images).
2. A training batch reads 256 random rows of one epoch, as the replaying loader does in its workers: ``read`` (the
   rows and their checksums, checked) against the same rows read from the memory maps without the check. Rounds are
   interleaved (each round starting with the other variant) and the median per batch is reported.
3. SHA-256 (``kdlab._io.digest``) of a 64 MiB float32 array in memory, as MB/s: the rate of the store's content
   identity (``TeacherStore.identity`` hashes ``store.json`` and ``rows.crc32``, 4 bytes per view), of the exact
   cache's ``.sha256`` check (its whole table, on every open) and of a data cache's ``content_sha256`` (every load).

The last table scales the measured rates to ImageNet-1k × 100 epochs (128,116,700 views), CIFAR-100's exact cache
(50,000 images × 162 views × 100 classes, float32: 3.24 GB) and CIFAR-100's data cache (60,000 × 3 × 32 × 32 uint8
images: 184 MB).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kdlab._io import digest
from kdlab.engine.environment import describe_machine
from kdlab.teachers.store import TeacherStore

PRECISIONS = (("float32", None), ("float16", None), ("topk", 10))
IMAGENET_VIEWS = 1_281_167 * 100
CIFAR_TABLE = 50_000 * 162 * 100 * 4
CIFAR_DATA = 60_000 * 3 * 32 * 32


def make_store(path: Path, n: int, precision: str, k: int | None, chunk: int = 256) -> tuple[TeacherStore, float]:
    expected = {"teacher": {"sha256": "0" * 64, "precision": "fp32"},
                "data": {"fingerprint": "0" * 64, "num_samples": n, "num_classes": 1000, "image_size": 224,
                         "reduce": True, "mean": [0.0] * 3, "std": [1.0] * 3}}
    sizes = np.full((n, 2), 256, dtype=np.int64)
    store = TeacherStore.create(path, expected, sizes, seed=0, epochs=1, precision=precision, k=k, chunk_size=chunk)
    gen = torch.Generator().manual_seed(0)
    seconds = 0.0
    for start in range(0, n, chunk):
        logits = torch.randn(min(chunk, n - start), 1000, generator=gen) * 3
        t0 = time.perf_counter()
        store.write(1, start, logits)
        seconds += time.perf_counter() - t0
        store.mark_done(1, start // chunk)
    return TeacherStore.open(path), seconds / n


def unchecked(store: TeacherStore, index: np.ndarray) -> dict[str, torch.Tensor]:
    """The rows as ``read`` returned them before the checksums: the memory maps' rows, no check."""
    maps = store._files()
    return {name.removesuffix(".bin"): torch.from_numpy(np.ascontiguousarray(maps[name][0, index]))
            for name in store._layout}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,048 images, 2 rounds (smoke run)")
    args = ap.parse_args(argv)
    n, rounds, batch = (2048, 2, 256) if args.quick else (16384, 7, 256)
    torch.set_num_threads(1)
    print(describe_machine())
    print(f"one-epoch stores of {n:,} images x 1000 classes, batches of {batch} random rows, median of {rounds} "
          "interleaved rounds\n")
    rng = np.random.default_rng(0)
    batches = [np.sort(rng.permutation(n)[:batch]) for _ in range(n // batch)]
    rows, rates = [], {}
    with tempfile.TemporaryDirectory(prefix="kdlab-integrity-") as tmp:
        for precision, k in PRECISIONS:
            store, write_s = make_store(Path(tmp) / precision, n, precision, k)
            for b in batches[:2]:  # warm-up: pages in the cache, first-call costs
                store.read(1, b), unchecked(store, b)
            times = {"checked": [], "unchecked": []}
            for r in range(rounds):
                order = ("checked", "unchecked") if r % 2 == 0 else ("unchecked", "checked")
                for variant in order:
                    read = store.read if variant == "checked" else (lambda e, i, s=store: unchecked(s, i))
                    t0 = time.perf_counter()
                    for b in batches:
                        read(1, b)
                    times[variant].append((time.perf_counter() - t0) / len(batches))
            checked, plain = (1e3 * statistics.median(times[v]) for v in ("checked", "unchecked"))
            label = "top-10" if precision == "topk" else precision
            rows.append((label, store.bytes_per_view, plain, checked, 1e3 * (checked - plain) / batch, 1e6 * write_s))
            rates[label] = (checked - plain) / 1e3 / batch  # seconds per view
        table = np.random.default_rng(1).standard_normal(16 * 2**20).astype(np.float32)  # 64 MiB
        digest(table)
        t0 = time.perf_counter()
        for _ in range(3):
            digest(table)
        sha = 3 * table.nbytes / (time.perf_counter() - t0)
    print("| store | bytes / view | read ms / batch, unchecked | read ms / batch, checked | check µs / view | "
          "write + checksum µs / view |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, bpv, plain, checked, per_view, write in rows:
        print(f"| {label} | {bpv} | {plain:.3f} | {checked:.3f} | {per_view:.2f} | {write:.1f} |")
    print(f"\n| what | rate | ImageNet-1k × 100 epochs / CIFAR-100 |\n|---|---:|---:|")
    for label in ("float32", "float16", "top-10"):
        print(f"| per-row check, {label} | {1e6 * rates[label]:.2f} µs / view | "
              f"{rates[label] * IMAGENET_VIEWS / 3600:.2f} core-hours over the run "
              f"({rates[label] * IMAGENET_VIEWS / 100:.0f} core-s per epoch) |")
    crc_bytes = 4 * IMAGENET_VIEWS
    print(f"| store identity (SHA-256 of rows.crc32) | {sha / 1e6:.0f} MB/s | "
          f"{crc_bytes / sha:.1f} s at the run's start ({crc_bytes / 1e9:.2f} GB) |")
    print(f"| exact cache .sha256 (SHA-256 of the table) | {sha / 1e6:.0f} MB/s | "
          f"{CIFAR_TABLE / sha:.1f} s per open of the CIFAR-100 float32 table ({CIFAR_TABLE / 1e9:.2f} GB) |")
    print(f"| data cache content_sha256 | {sha / 1e6:.0f} MB/s | "
          f"{CIFAR_DATA / sha:.2f} s per load of the CIFAR-100 cache ({CIFAR_DATA / 1e6:.0f} MB) |")


if __name__ == "__main__":
    main()
