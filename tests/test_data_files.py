"""Official-format files written here (small subsets) load through source='file'; every
malformed file gives one clear DataFileError naming the file and the expectation."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from vaesae.data import DSPRITES, SHAPES3D, DataFileError, FactorSpace, get_dataset
from vaesae.data.files import OFFICIAL_FILES, _check_order, read_file

NPZ, HDF5 = OFFICIAL_FILES["dsprites"]
H5 = OFFICIAL_FILES["shapes3d"][0]


def subset(space, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(space), generator=gen)[:n].sort().values
    return space.factors_of(index).numpy()


def dsprites_arrays(n=50, seed=0):
    rng = np.random.default_rng(seed)
    classes = subset(DSPRITES, n, seed)
    imgs = rng.integers(0, 2, (n, 64, 64), dtype=np.uint8)
    cls6 = np.concatenate([np.zeros((n, 1), np.int64), classes], 1)
    vals6 = np.concatenate([np.ones((n, 1)), DSPRITES.values_of(classes)], 1)
    return dict(imgs=imgs, latents_values=vals6, latents_classes=cls6)


def write_npz(path, arrays, metadata=True):
    extra = {"metadata": np.array({"title": "dSprites"}, dtype=object)} if metadata else {}
    np.savez(path, **arrays, **extra)


def shapes3d_arrays(n=40, seed=0):
    rng = np.random.default_rng(seed)
    classes = subset(SHAPES3D, n, seed)
    return dict(
        images=rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
        labels=SHAPES3D.values_of(classes),
    ), classes


def write_h5(path, arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def test_dsprites_npz_loads_with_correct_factors(tmp_path):
    arrays = dsprites_arrays()
    write_npz(tmp_path / NPZ, arrays)
    ds = get_dataset("dsprites", source="file", root=tmp_path)
    assert ds.source == "file" and not ds.complete
    classes = torch.from_numpy(arrays["latents_classes"][:, 1:])
    assert torch.equal(ds.images(classes)[:, 0], torch.from_numpy(arrays["imgs"]) * 255)
    sampled = ds.sample_factors(200, torch.Generator().manual_seed(0))
    assert set(ds.index_of(sampled).tolist()) <= set(ds.index_of(classes).tolist())
    missing = torch.tensor([[0, 0, 0, 0, 0]])
    if not bool((ds.index_of(classes) == 0).any()):
        with pytest.raises(KeyError, match="not in this file"):
            ds.images(missing)


@pytest.mark.parametrize("layout", ["release", "flat"])
def test_dsprites_hdf5_loads(tmp_path, layout):
    arrays = dsprites_arrays(seed=1)
    keys = {"latents_values": "latents/values", "latents_classes": "latents/classes"}
    if layout == "release":
        arrays = {keys.get(k, k): v for k, v in arrays.items()}
    write_h5(tmp_path / HDF5, arrays)
    ds = get_dataset("dsprites", source="file", root=tmp_path)
    cls = next(v for k, v in arrays.items() if "classes" in k)[:, 1:]
    assert torch.equal(
        ds.images(torch.from_numpy(cls))[:, 0], torch.from_numpy(arrays["imgs"]) * 255
    )


def test_shapes3d_h5_loads_with_correct_factors(tmp_path):
    arrays, classes = shapes3d_arrays()
    write_h5(tmp_path / H5, arrays)
    ds = get_dataset("shapes3d", source="file", root=tmp_path)
    imgs = ds.images(torch.from_numpy(classes))
    assert imgs.shape == (40, 3, 64, 64)
    assert torch.equal(imgs, torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2))


def test_auto_prefers_the_file_and_falls_back_to_the_renderer(tmp_path):
    write_npz(tmp_path / NPZ, dsprites_arrays())
    assert get_dataset("dsprites", source="auto", root=tmp_path).source == "file"
    assert get_dataset("dsprites", source="auto", root=tmp_path / "empty").source == "procedural"


def test_only_a_renderer_renders_on_the_device_and_unchecked_images_are_the_checked_ones(
    tmp_path,
):
    write_npz(tmp_path / NPZ, dsprites_arrays())
    file_ds = get_dataset("dsprites", source="file", root=tmp_path)
    rendered = get_dataset("dsprites", source="procedural")
    # A file's images are gathered in host memory, which a CUDA graph cannot replay.
    assert rendered.renders_on_device and not file_ds.renders_on_device
    for ds in (file_ds, rendered):
        factors = ds.sample_factors(16, torch.Generator().manual_seed(0))
        assert torch.equal(ds.images(factors, check=False), ds.images(factors))
        bad = factors.clone()
        bad[0, 0] = 99
        with pytest.raises(ValueError, match="out of range"):
            ds.images(bad)


def test_unknown_names_list_the_valid_choices():
    with pytest.raises(ValueError, match="dsprites, shapes3d"):
        get_dataset("mnist")
    with pytest.raises(ValueError, match="auto, file, procedural"):
        get_dataset("dsprites", source="web")


def test_complete_file_order_is_enforced(tmp_path):
    tiny = FactorSpace("tiny", ("a", "b"), (np.arange(2.0), np.arange(3.0)))
    ordered = tiny.factors_of(torch.arange(6)).numpy()
    assert _check_order(tmp_path / "f", tiny, ordered) is True
    assert _check_order(tmp_path / "f", tiny, ordered[[0, 4]]) is False
    with pytest.raises(DataFileError, match="official index order"):
        _check_order(tmp_path / "f", tiny, ordered[[1, 0, 2, 3, 4, 5]])
    with pytest.raises(DataFileError, match="appears twice"):
        _check_order(tmp_path / "f", tiny, ordered[[1, 1]])


def _malformed_dsprites():
    def drop(key):
        return lambda a: {k: v for k, v in a.items() if k != key}

    def change(key, fn):
        return lambda a: a | {key: fn(a[key])}

    return {
        "missing imgs": (drop("imgs"), "missing keys \\['imgs'\\]"),
        "missing classes": (drop("latents_classes"), "latents_classes"),
        "wrong image shape": (
            change("imgs", lambda v: v[:, :32]),
            "imgs must be uint8 \\(N, 64, 64\\)",
        ),
        "float images": (change("imgs", lambda v: v.astype(np.float32)), "imgs must be uint8"),
        "not binary": (change("imgs", lambda v: v * 255), "binary"),
        "five latents": (
            change("latents_values", lambda v: v[:, 1:]),
            "latents_values must have shape",
        ),
        "row count": (
            change("latents_classes", lambda v: v[:-1]),
            "latents_classes must have shape",
        ),
        "float classes": (change("latents_classes", lambda v: v.astype(float)), "must be integer"),
        "off grid": (
            change("latents_values", lambda v: v + np.r_[0, 0, 0.01, 0, 0, 0]),
            "off the official grid",
        ),
        "disagree": (
            # posY class shifted by one where possible: the values no longer match the classes
            change("latents_classes", lambda v: v + np.r_[0, 0, 0, 0, 0, 1] * (v[:, 5:6] < 31)),
            "disagree",
        ),
        "colour": (change("latents_classes", lambda v: v + (np.arange(6) == 0)), "color class"),
        "duplicate rows": (
            lambda a: {k: np.concatenate([v, v[:1]]) for k, v in a.items()},
            "appears twice",
        ),
    }


@pytest.mark.parametrize("case", list(_malformed_dsprites()))
def test_malformed_dsprites_file(tmp_path, case):
    mutate, message = _malformed_dsprites()[case]
    path = tmp_path / NPZ
    write_npz(path, mutate(dsprites_arrays()))
    with pytest.raises(DataFileError, match=message) as err:
        get_dataset("dsprites", source="file", root=tmp_path)
    assert str(path) in str(err.value)


def test_truncated_files(tmp_path):
    npz = tmp_path / NPZ
    write_npz(npz, dsprites_arrays())
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(DataFileError, match="truncated") as err:
        read_file(npz)
    assert NPZ in str(err.value)
    h5 = tmp_path / H5
    write_h5(h5, shapes3d_arrays()[0])
    h5.write_bytes(h5.read_bytes()[:4000])
    with pytest.raises(DataFileError, match="truncated"):
        read_file(h5)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: {"images": a["images"]}, "missing keys \\['labels'\\]"),
        (lambda a: a | {"images": a["images"][..., :1]}, "images must be uint8 \\(N, 64, 64, 3\\)"),
        (lambda a: a | {"labels": a["labels"][:, :5]}, "labels must be float"),
        (lambda a: a | {"labels": a["labels"] + 0.05}, "off the official grid"),
    ],
    ids=["no labels", "one channel", "five labels", "off grid"],
)
def test_malformed_shapes3d_file(tmp_path, mutate, message):
    write_h5(tmp_path / H5, mutate(shapes3d_arrays()[0]))
    with pytest.raises(DataFileError, match=message):
        get_dataset("shapes3d", source="file", root=tmp_path)


def test_missing_file_names_the_expected_paths(tmp_path):
    with pytest.raises(DataFileError, match="3dshapes.h5") as err:
        get_dataset("shapes3d", source="file", root=tmp_path)
    assert str(tmp_path) in str(err.value)


def test_file_images_stay_on_the_host_and_only_batches_move(tmp_path):
    """Moving a file-backed dataset to a device moves no image array (5.5 GiB for Shapes3D):
    each gathered batch is copied there instead."""
    arrays, classes = shapes3d_arrays()
    write_h5(tmp_path / H5, arrays)
    ds = get_dataset("shapes3d", source="file", root=tmp_path)
    host = ds.backend.images
    factors = torch.from_numpy(classes[:5])
    expected = ds.images(factors)
    ds.to("meta")  # a device with no storage: any copy of the whole array would land there
    assert ds.backend.images is host and host.device.type == "cpu"
    batch = ds.images(factors)
    assert batch.device.type == "meta" and batch.shape == expected.shape == (5, 3, 64, 64)
    assert torch.equal(ds.to("cpu").images(factors), expected)
