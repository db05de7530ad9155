"""CheckpointStore (serial): round trip, pruning, torn-write detection and fallback."""
import json

import numpy as np
import pytest

from rgdist.errors import CheckpointError
from rgdist.io import h5
from rgdist.io.checkpoint import POINTER, CheckpointStore, checkpoint_name, inspect_file
from rgdist.io.atomic import atomic_write_json, read_json
from rgdist.parallel.comm import Comm


def _arrays(tag: int) -> dict:
    rng = np.random.default_rng(tag)
    return {
        "model/conv.weight": rng.normal(size=(4, 1, 3, 3)),
        "optimizer/step": np.array(tag, dtype=np.int64),
        "rank0/hmc/phi": rng.normal(size=(2, 8, 8)),
        "rank0/rng/torch": rng.integers(0, 256, size=32, dtype=np.uint8),
        "mask": np.array([True, False]),
    }


def _attrs(tag: int) -> dict:
    return {"stage": "train", "step": 10 * tag, "config": {"lam": 0.5, "shape": [8, 8]}, "note": "φ⁴"}


def _save(store, *tags):
    for t in tags:
        store.save(t, _arrays(t), _attrs(t))


def _assert_is(got, tag):
    assert got is not None
    t, arrays, attrs = got
    assert t == tag
    assert attrs == _attrs(tag)
    ref = _arrays(tag)
    assert sorted(arrays) == sorted(ref)
    for n in ref:
        assert arrays[n].dtype == ref[n].dtype and arrays[n].shape == ref[n].shape
        np.testing.assert_array_equal(arrays[n], ref[n])


@pytest.fixture
def store(tmp_path, serial_comm):
    return CheckpointStore(tmp_path / "ckpt", serial_comm, keep=3)


def test_empty_directory_gives_none(store):
    assert store.load_latest() is None


def test_round_trip_and_pointer(store):
    ptr = store.save(5, _arrays(5), _attrs(5))
    _assert_is(store.load_latest(), 5)
    on_disk = read_json(store.directory / POINTER)
    assert on_disk == ptr
    assert ptr["file"] == checkpoint_name(5) == "ckpt-00000005.h5" and ptr["tag"] == 5
    assert ptr["n_arrays"] == 5
    assert ptr["nbytes"] == sum(a.nbytes for a in _arrays(5).values())
    assert ptr["file_size"] == (store.directory / ptr["file"]).stat().st_size
    assert inspect_file(store.directory / ptr["file"])[1] == ptr["manifest_sha256"]
    with h5.open_h5(store.directory / ptr["file"], "r", Comm.serial()) as f:
        assert h5.read_attrs(f)["rgdist_layout"] == h5.LAYOUT_VERSION == 2


def test_keep_k_pruning_and_no_partials(store):
    _save(store, 1, 2, 3, 4, 5)
    assert store.tags() == [3, 4, 5]
    assert sorted(p.name for p in store.directory.iterdir()) == sorted(
        [POINTER, *(checkpoint_name(t) for t in (3, 4, 5))])
    _assert_is(store.load_latest(), 5)


def test_saving_an_older_tag_drops_the_abandoned_newer_ones(store):
    _save(store, 1, 2, 3)
    _save(store, 2)
    assert store.tags() == [1, 2]
    _assert_is(store.load_latest(), 2)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_data_byte(path, name="rank0/hmc/phi"):
    with h5.open_h5(path, "r", Comm.serial()) as f:
        offset = f["arrays"][name].id.get_offset()
    raw = bytearray(path.read_bytes())
    raw[offset + 11] ^= 0x40
    path.write_bytes(bytes(raw))


def _flip_superblock(path):
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0xFF
    path.write_bytes(bytes(raw))


def _flip_attribute_byte(path):
    """One bit inside the stored attrs JSON: object headers are checksummed (libver v108)."""
    raw = bytearray(path.read_bytes())
    i = raw.find(b'"stage"')
    assert i > 0
    raw[i + 2] ^= 0x01
    path.write_bytes(bytes(raw))


def _drop_complete(path):
    with h5.open_h5(path, "r+", Comm.serial()) as f:
        del f.attrs["complete"]


def _delete(path):
    path.unlink()


@pytest.mark.parametrize("damage", [_truncate, _flip_data_byte, _flip_superblock, _flip_attribute_byte,
                                    _drop_complete, _delete])
def test_torn_current_falls_back_to_previous(store, damage):
    _save(store, 1, 2, 3)
    damage(store.path(3))
    reason, _ = inspect_file(store.path(3))
    assert reason is not None
    _assert_is(store.load_latest(), 2)


def test_flipped_data_byte_is_named_in_the_reason(store):
    _save(store, 1)
    _flip_data_byte(store.path(1))
    reason, _ = inspect_file(store.path(1))
    assert "rank0/hmc/phi" in reason and "checksum" in reason


def test_dangling_or_garbled_pointer_scans_descending(store):
    _save(store, 1, 2)
    atomic_write_json(store.directory / POINTER, {"file": checkpoint_name(7), "tag": 7})
    _assert_is(store.load_latest(), 2)
    (store.directory / POINTER).write_bytes(b'{"file": "ckpt-000')
    _assert_is(store.load_latest(), 2)


def test_pointer_digest_mismatch_rejects_target(store):
    _save(store, 1, 2)
    ptr = read_json(store.directory / POINTER)
    ptr["manifest_sha256"] = "0" * 64
    atomic_write_json(store.directory / POINTER, ptr)
    # ckpt-2 fails against the pointer but is intact on its own: the scan takes it
    _assert_is(store.load_latest(), 2)
    _drop_complete(store.path(2))
    _assert_is(store.load_latest(), 1)


def test_pointer_is_authoritative_and_newer_complete_file_is_a_fallback(store):
    _save(store, 1, 2)
    (store.directory / POINTER).unlink()  # crash after renaming ckpt-2, before the switch
    _assert_is(store.load_latest(), 2)
    digest_1 = inspect_file(store.path(1))[1]
    atomic_write_json(store.directory / POINTER, {"file": checkpoint_name(1), "tag": 1,
                                                  "manifest_sha256": digest_1})
    _assert_is(store.load_latest(), 1)  # the intact pointer target wins over a newer file
    store.save(1, _arrays(1), _attrs(1))
    assert store.tags() == [1]


def test_none_usable_raises_with_every_reason(store):
    _save(store, 1, 2)
    _truncate(store.path(1))
    _drop_complete(store.path(2))
    with pytest.raises(CheckpointError) as info:
        store.load_latest()
    msg = str(info.value)
    assert "no usable checkpoint" in msg and "ckpt-00000001.h5" in msg and "ckpt-00000002.h5" in msg
    assert "complete" in msg


def test_only_a_dangling_pointer_raises(store):
    store.directory.mkdir(parents=True)
    atomic_write_json(store.directory / POINTER, {"file": checkpoint_name(3), "tag": 3})
    with pytest.raises(CheckpointError, match="file missing"):
        store.load_latest()


def test_leftover_partial_is_ignored(store):
    _save(store, 1)
    (store.directory / f".{checkpoint_name(2)}.partial").write_bytes(b"torn")
    _assert_is(store.load_latest(), 1)
    _save(store, 2)
    assert not list(store.directory.glob(".*.partial"))


def test_bad_input(tmp_path, serial_comm):
    with pytest.raises(ValueError, match="keep"):
        CheckpointStore(tmp_path, serial_comm, keep=0)
    store = CheckpointStore(tmp_path, serial_comm)
    with pytest.raises(ValueError, match="rank 0 may not pass rank 1"):
        store.save(1, {"rank1/x": np.zeros(2)}, {})
    with pytest.raises(ValueError, match="attrs"):
        store.save(1, {"x": np.zeros(2)}, {"bad": object()})
    with pytest.raises(ValueError, match="tag"):
        store.save(-1, {"x": np.zeros(2)}, {})
    assert store.load_latest() is None


def test_all_ranks_flag_and_file_is_plain_json_attrs(store):
    store.save(1, _arrays(1), _attrs(1))
    with h5.open_h5(store.path(1), "r", Comm.serial()) as f:
        attrs = h5.read_attrs(f)
    assert json.loads(attrs["attrs_json"]) == _attrs(1)
    assert attrs["complete"] == 1 and attrs["tag"] == 1 and attrs["writer_size"] == 1
    assert sorted(json.loads(attrs["manifest_json"])) == sorted(_arrays(1))
    _assert_is(store.load_latest(all_ranks=True), 1)
