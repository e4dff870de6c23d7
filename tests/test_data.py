"""The data layer: the shipped digits, npz and folder sources, `fits`, `load`, `test_split`."""

from __future__ import annotations

import sys
from collections import Counter
from importlib import resources

import numpy as np
import pytest
import torch

from assembler import data as D
from assembler.errors import DataError
from assembler.ir import Span

SPAN = Span(file="t.net", line=3, column=5, end_line=3, end_column=9)
DIGITS_ARGS = {"split": "train", "classes": None, "positive": None, "per_class": None, "invert": False}


def fails(fn, *args, **kwargs) -> DataError:
    """Call a loader with SPAN; it must raise a DataError located there."""
    with pytest.raises(DataError) as info:
        fn(*args, span=SPAN, **kwargs)
    err = info.value
    assert (err.filename, err.line, err.column) == ("t.net", 3, 5)
    assert str(err).startswith("t.net:3:5: error: ")
    return err


def bytes_of(ds: D.Dataset) -> list[bytes]:
    """The samples of a dataset as byte strings."""
    return [row.numpy().tobytes() for row in ds.x]


def key(ds: D.Dataset) -> set[bytes]:
    return set(bytes_of(ds))


# --- digits -------------------------------------------------------------------------------------


def test_shipped_archive():
    with resources.files("assembler.data").joinpath("digits.npz").open("rb") as fh, np.load(fh) as f:
        x, y, test = f["x"], f["y"], f["test"]
    assert x.dtype == np.uint8 and x.shape == (1797, 8, 8) and x.max() == 16 and x.min() == 0
    assert y.dtype == np.uint8 and y.shape == (1797,) and set(np.unique(y)) == set(range(10))
    assert test.dtype == bool and test.sum() == 451
    assert resources.files("assembler.data").joinpath("DIGITS.md").is_file()


def test_digits_shapes_and_ranges():
    ds = D.digits()
    assert isinstance(ds, torch.utils.data.TensorDataset)
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert ds.x.shape == (1346, 1, 8, 8) and ds.shape == (1, 8, 8) and len(ds) == 1346
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert torch.allclose(ds.x * 16, (ds.x * 16).round())  # pixel counts 0..16 scaled by 1/16
    assert ds.classes == 10 and ds.name == "digits"
    x, y = ds[0]
    assert x.shape == (1, 8, 8) and y.dim() == 0


def test_digits_splits_are_stratified_and_disjoint():
    train, test, every = D.digits("train"), D.digits(split="test"), D.digits(split="all")
    assert (len(train), len(test), len(every)) == (1346, 451, 1797)
    assert not key(train) & key(test)
    assert Counter(bytes_of(train)) + Counter(bytes_of(test)) == Counter(bytes_of(every))
    all_counts = torch.bincount(every.y, minlength=10)
    test_counts = torch.bincount(test.y, minlength=10)
    assert torch.equal(torch.bincount(train.y, minlength=10) + test_counts, all_counts)
    assert torch.all((test_counts.float() / all_counts.float() - 0.25).abs() < 0.01)
    assert torch.equal(torch.cat([train.x, test.x]).sum(0), every.x.sum(0))


def test_digits_classes_relabelled_in_order():
    every = D.digits(split="all")
    ds = D.digits(split="all", classes=[7, 2])
    assert ds.classes == 2 and ds.class_names == ["7", "2"]
    assert torch.equal(ds.x[ds.y == 0], every.x[every.y == 7])
    assert torch.equal(ds.x[ds.y == 1], every.x[every.y == 2])
    assert ds.name == 'digits(split="all", classes=[7, 2])'


def test_digits_positive_is_balanced():
    ds = D.digits(positive=3)
    counts = torch.bincount(ds.y, minlength=2)
    assert ds.classes == 2 and counts[1] == 137 and counts[0] == counts[1]
    threes = {row.numpy().tobytes() for row in D.digits(classes=[3]).x}
    positives = {row.numpy().tobytes() for row in ds.x[ds.y == 1]}
    negatives = {row.numpy().tobytes() for row in ds.x[ds.y == 0]}
    assert positives == threes and not negatives & threes
    assert torch.equal(D.digits(positive=3).x, ds.x)
    assert not torch.equal(D.digits(positive=3, seed=1).x, ds.x)
    few = D.digits(positive=3, per_class=10, split="test")
    assert torch.bincount(few.y).tolist() == [10, 10]


def test_digits_per_class_is_seeded():
    a, b, c = D.digits(per_class=5), D.digits(per_class=5), D.digits(per_class=5, seed=1)
    assert len(a) == 50 and torch.bincount(a.y).tolist() == [5] * 10
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert key(a) <= key(D.digits())  # taken from the chosen split
    assert key(D.digits(per_class=5, split="test")) <= key(D.digits(split="test"))
    sub = D.digits(classes=[4, 9], per_class=3)
    assert torch.bincount(sub.y).tolist() == [3, 3] and sub.classes == 2


def test_digits_invert():
    assert torch.equal(D.digits(invert=True).x, 1 - D.digits().x)


# --- npz ----------------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, size=(6, 3, 4, 5)).astype(np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = D.npz("d.npz", base_dir=tmp_path)
    assert ds.x.dtype == torch.float32 and ds.x.shape == (6, 3, 4, 5)
    assert torch.equal(ds.x, torch.from_numpy(x.astype(np.float32)))  # cast as is, not scaled
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == y.tolist() and ds.classes == 3
    assert ds.name == 'npz("d.npz")'
    np.savez(tmp_path / "g.npz", x=np.zeros((4, 8, 8), np.float64), y=np.array([0.0, 1.0, 1.0, 0.0]))
    ds = D.npz(str(tmp_path / "g.npz"))
    assert ds.x.shape == (4, 1, 8, 8) and ds.y.dtype == torch.int64 and ds.classes == 2


# --- folder -------------------------------------------------------------------------------------


def _pil():
    return pytest.importorskip("PIL.Image")


def test_folder_gray_and_rgb(tmp_path):
    Image = _pil()
    for cls, value in (("b_cat", 255), ("a_dog", 0)):
        (tmp_path / "gray" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (5, 4), value).save(tmp_path / "gray" / cls / f"{i}.png")
    (tmp_path / "gray" / "a_dog" / "notes.txt").write_text("not an image")
    ds = D.folder("gray", base_dir=tmp_path)
    assert ds.x.shape == (4, 1, 4, 5) and ds.classes == 2 and ds.class_names == ["a_dog", "b_cat"]
    assert ds.y.tolist() == [0, 0, 1, 1]
    assert float(ds.x[ds.y == 0].max()) == 0.0 and float(ds.x[ds.y == 1].min()) == 1.0
    (tmp_path / "rgb" / "x").mkdir(parents=True)
    (tmp_path / "rgb" / "y").mkdir(parents=True)
    Image.new("RGB", (9, 7), (255, 0, 0)).save(tmp_path / "rgb" / "x" / "a.png")
    Image.new("L", (3, 3), 128).save(tmp_path / "rgb" / "y" / "b.jpg")
    ds = D.folder(tmp_path / "rgb", size=[6, 8])
    assert ds.x.shape == (2, 3, 6, 8) and ds.name.endswith("size=[6, 8])")
    assert torch.allclose(ds.x[0, :, 2, 2], torch.tensor([1.0, 0.0, 0.0]))


def test_folder_errors(tmp_path):
    Image = _pil()
    (tmp_path / "d" / "zero").mkdir(parents=True)
    (tmp_path / "d" / "one").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "d" / "zero" / "a.png")
    err = fails(D.folder, tmp_path / "d")
    assert err.message == f"folder: class folder '{tmp_path / 'd' / 'one'}' has no images"
    Image.new("L", (5, 5)).save(tmp_path / "d" / "one" / "b.png")
    err = fails(D.folder, tmp_path / "d")
    assert err.message == (f"folder: images differ in size: '{tmp_path / 'd' / 'one' / 'b.png'}' is 5x5 "
                           f"but '{tmp_path / 'd' / 'zero' / 'a.png'}' is 4x4")
    assert err.diagnostics[0].hint == "give size=[height, width] to resize them all"
    (tmp_path / "d" / "one" / "c.png").write_bytes(b"garbage")
    assert fails(D.folder, tmp_path / "d", size=[4, 4]).message.startswith(
        f"folder: cannot read image '{tmp_path / 'd' / 'one' / 'c.png'}'")
    (tmp_path / "flat").mkdir()
    assert fails(D.folder, tmp_path / "flat").message == f"folder: '{tmp_path / 'flat'}' has no class sub-folders"


def test_folder_without_pillow(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.setitem(sys.modules, "PIL", None)
    err = fails(D.folder, tmp_path)
    assert err.message == "folder: reading images needs Pillow, which is not installed"
    assert err.diagnostics[0].hint == "pip install pillow"


# --- errors -------------------------------------------------------------------------------------


def test_digits_errors():
    assert fails(D.digits, split="val").message == 'digits: split must be "train", "test" or "all", got "val"'
    assert fails(D.digits, classes=[1], positive=2).message == "digits: give classes or positive, not both"
    assert fails(D.digits, classes=[1, 12]).message == "digits: class 12 has no samples: digits has classes 0-9"
    assert fails(D.digits, classes=[]).message == "digits: classes=[] keeps no class"
    assert fails(D.digits, classes=[1, 1]).message == "digits: classes=[1, 1] names a class twice"
    assert fails(D.digits, positive=10).message == "digits: positive=10 names no class: digits has classes 0-9"
    err = fails(D.digits, per_class=200)
    assert err.message == "digits: per_class=200 but class 0 has only 133 samples in the train split"
    assert err.diagnostics[0].hint == 'use per_class=133 or less, or split="all"'
    assert fails(D.digits, classes=[8], per_class=50, split="test").message == \
        "digits: per_class=50 but class 8 has only 44 samples in the test split"
    assert fails(D.digits, positive=8, per_class=140).message == \
        "digits: per_class=140 but class 8 has only 130 samples in the train split"
    assert fails(D.digits, per_class=0).message == "digits: per_class must be a positive whole number, got 0"


def test_npz_errors(tmp_path):
    missing = tmp_path / "nope.npz"
    assert fails(D.npz, "nope.npz", base_dir=tmp_path).message == f"npz: no such file: '{missing}'"
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 8, 8)), y=np.zeros(2, int))
    err = fails(D.npz, tmp_path / "nox.npz")
    assert err.message == f"npz: '{tmp_path / 'nox.npz'}' has no array 'x' (it has: images, y)"
    assert err.diagnostics[0].hint == "save one with numpy.savez(path, x=samples, y=labels)"
    np.savez(tmp_path / "noy.npz", x=np.zeros((2, 8, 8)))
    assert fails(D.npz, tmp_path / "noy.npz").message == f"npz: '{tmp_path / 'noy.npz'}' has no array 'y' (it has: x)"
    np.savez(tmp_path / "len.npz", x=np.zeros((3, 1, 8, 8)), y=np.zeros(2, int))
    assert fails(D.npz, tmp_path / "len.npz").message == \
        f"npz: '{tmp_path / 'len.npz'}' has 3 samples in x but 2 labels in y"
    np.savez(tmp_path / "neg.npz", x=np.zeros((2, 4)), y=np.array([0, -1]))
    assert fails(D.npz, tmp_path / "neg.npz").message == \
        f"npz: y in '{tmp_path / 'neg.npz'}' must hold class numbers 0, 1, 2, ..., got -1"
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2, int))
    assert fails(D.npz, tmp_path / "obj.npz").message.startswith(f"npz: cannot read '{tmp_path / 'obj.npz'}'")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    assert fails(D.npz, tmp_path / "junk.npz").message.startswith(f"npz: cannot read '{tmp_path / 'junk.npz'}'")
    np.savez_compressed(tmp_path / "whole.npz", x=np.random.default_rng(0).random((300, 4)), y=np.zeros(300, int))
    blob = bytearray((tmp_path / "whole.npz").read_bytes())
    blob[200:260] = bytes(60)  # a damaged header inside the archive
    (tmp_path / "damaged.npz").write_bytes(bytes(blob))
    assert fails(D.npz, tmp_path / "damaged.npz").message.startswith(f"npz: cannot read '{tmp_path / 'damaged.npz'}'")
    np.save(tmp_path / "one.npy", np.zeros(3))
    assert fails(D.npz, tmp_path / "one.npy").message == \
        f"npz: '{tmp_path / 'one.npy'}' is a single array, not an .npz archive of x and y"


def test_missing_folder():
    assert fails(D.folder, "/no/such/dir").message == "folder: no such folder: '/no/such/dir'"


def test_fits():
    ds = D.digits(per_class=1)
    D.fits(ds, [1, 8, 8])
    D.fits(ds, (1, 8, 8), outputs=10)
    err = fails(D.fits, ds, [3, 32, 32])
    assert err.message == ("data digits(per_class=1) gives samples of shape [1, 8, 8] "
                           "but the network's input x is [3, 32, 32]")
    assert fails(D.fits, D.digits(per_class=1), [1, 8, 8], outputs=5).message == \
        "data digits(per_class=1) has 10 classes but the network gives only 5 outputs"


# --- registry -----------------------------------------------------------------------------------


def test_load_through_registry(tmp_path):
    ds = D.load({"name": "digits", "args": {**DIGITS_ARGS, "classes": [0, 1], "per_class": 4}})
    assert len(ds) == 8 and ds.classes == 2
    assert torch.equal(D.load({"name": "digits", "args": {**DIGITS_ARGS, "per_class": 2}}, seed=3).x,
                       D.digits(per_class=2, seed=3).x)
    np.savez(tmp_path / "d.npz", x=np.ones((2, 1, 2, 2)), y=np.array([0, 1]))
    assert len(D.load({"name": "npz", "args": {"path": "d.npz"}}, base_dir=tmp_path)) == 2
    with pytest.raises(DataError) as info:
        D.load({"name": "npz", "args": {"path": "gone.npz"}}, base_dir=tmp_path, span=SPAN)
    assert (info.value.filename, info.value.line) == ("t.net", 3)
    with pytest.raises(DataError) as info:
        D.load({"name": "digits", "args": {**DIGITS_ARGS, "split": "dev"}}, span=SPAN)
    assert info.value.line == 3 and "split must be" in info.value.message
    with pytest.raises(DataError, match="unknown data source 'imagenet'"):
        D.load({"name": "imagenet", "args": {}}, span=SPAN)


def test_test_split():
    call = {"name": "digits", "args": {**DIGITS_ARGS, "classes": [3, 5], "per_class": 10, "invert": True}}
    assert D.test_split(call) == {"name": "digits", "args": {**DIGITS_ARGS, "split": "test", "classes": [3, 5],
                                                             "per_class": None, "invert": True}}
    assert call["args"]["split"] == "train"  # not mutated
    assert len(D.load(D.test_split(call))) == 46 + 46
    assert D.test_split({"name": "npz", "args": {"path": "a.npz"}}) is None
    # training on "all" (or "test") leaves no held-out data: no default test set that overlaps it
    assert D.test_split({"name": "digits", "args": {**DIGITS_ARGS, "split": "all"}}) is None
    assert D.test_split({"name": "folder", "args": {"path": "a", "size": None}}) is None
