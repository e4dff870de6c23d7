"""Build `assembler/data/digits.npz`, the 8x8 digits shipped with the package.

Source: scikit-learn's copy of the UCI ML hand-written digits (Alpaydin & Kaynak, 1998),
`sklearn/datasets/data/digits.csv.gz`: 1797 rows of 64 pixel counts (0..16) and a label.
scikit-learn is not a dependency of `assembler`; it is only needed (somewhere) to rerun this.

The archive holds three arrays:

    x     uint8 [1797, 8, 8]  pixel counts 0..16, exactly as in the CSV (row-major 8x8)
    y     uint8 [1797]        the digit 0..9
    test  bool  [1797]        the fixed evaluation split: 25% of each class (rounded half
                              up), drawn with numpy.random.default_rng(SEED)

It is written with fixed zip timestamps, so a rerun gives the same bytes.

    python tools/make_digits.py [--csv PATH] [--out PATH] [--check]

`--csv` defaults to the copy inside an importable scikit-learn; `--check` compares with the
shipped file instead of writing it.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

SEED = 0
TEST_FRACTION = 0.25
OUT = Path(__file__).resolve().parent.parent / "assembler" / "data" / "digits.npz"


def default_csv() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-learn is not importable here; give --csv PATH/TO/digits.csv.gz")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65):
        sys.exit(f"{path}: expected 1797 rows of 65 values, got {table.shape}")
    x, y = table[:, :64], table[:, 64]
    assert x.min() >= 0 and x.max() <= 16 and set(np.unique(y)) == set(range(10))
    return x.reshape(-1, 8, 8).astype(np.uint8), y.astype(np.uint8)


def test_mask(y: np.ndarray, seed: int = SEED, fraction: float = TEST_FRACTION) -> np.ndarray:
    """A stratified boolean mask: floor(n_c * fraction + 0.5) samples of each class c."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(y == c)
        k = int(np.floor(len(members) * fraction + 0.5))
        mask[rng.choice(members, size=k, replace=False)] = True
    return mask


def archive(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (what numpy.savez_compressed writes) with fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=None, help="scikit-learn's digits.csv.gz")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    x, y = read_csv(args.csv or default_csv())
    data = archive({"x": x, "y": y, "test": test_mask(y)})
    if args.check:
        same = args.out.exists() and args.out.read_bytes() == data
        print(f"{args.out}: {'up to date' if same else 'DIFFERS'}")
        sys.exit(0 if same else 1)
    args.out.write_bytes(data)
    counts = np.bincount(y[test_mask(y)], minlength=10)
    print(f"wrote {args.out} ({len(data)} bytes): {len(y)} samples, "
          f"{int(counts.sum())} test ({', '.join(map(str, counts))} per class)")


if __name__ == "__main__":
    main()
