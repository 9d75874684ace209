"""Read PyTorch state dicts saved in the legacy (pre-zip) format, without torch and safely.

``torch.save`` wrote, until PyTorch 1.6 made a zip archive the default, a stream of consecutive
pickles followed by raw tensor bytes:

1. the magic number ``0x1950a86a20f9469cfc6c``,
2. the protocol version (1001),
3. a dict of system information (byte order, sizes of C types),
4. the object itself -- here an ``OrderedDict`` of tensors. Each tensor is pickled as a call to
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` whose storage is a
   *persistent id* ``("storage", torch.FloatStorage, key, location, numel, view)``: a reference
   to bytes that come later in the file,
5. the list of storage keys, in the order their bytes follow,
6. for each storage: its element count as an 8-byte little-endian integer, then its elements
   as raw little-endian bytes.

Unpickling runs whatever callables the pickle names, so ``torch.load`` of an untrusted file can
execute arbitrary code. This reader never imports torch, nor anything else a pickle names:
:class:`_StateDictUnpickler` maps the handful of globals a state dict needs to local, inert
stand-ins and refuses every other global before it can be called. The bytes of each tensor are
then read with ``struct`` and ``numpy`` and viewed with the tensor's own offset and strides.
"""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# Storage classes as pickled by torch.save, and the little-endian dtype of their elements.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_ZIP_MAGIC = b"PK\x03\x04"


class _Inert:
    """Base of the reader's stand-ins: a pickle cannot give them state.

    The BUILD opcode sets attributes of any object on the stack; refusing it means a crafted
    file cannot, say, change the dtype of a storage type or the shape of a tensor after the
    checks.
    """

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(
            f"a state dict does not set the state of a {type(self).__name__.lstrip('_')}"
        )


class _StorageType(_Inert):
    """Stand-in for a ``torch.<Type>Storage`` class: only records the element dtype.

    An instance rather than a class, so a pickle that tries to *call* it (REDUCE, NEWOBJ)
    fails instead of constructing anything.
    """

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype


class _Storage(_Inert):
    """A storage announced by a persistent id; its elements are filled in after the pickle.

    Attributes:
        key: the storage key the trailing data is listed under.
        dtype: the element dtype.
        numel: the number of elements the pickle declares.
        base: for an old-style storage view, the storage it is a window of, else None.
        base_offset: the view's first element in ``base``.
        data: the elements (1-D array), once read.
    """

    __slots__ = ("key", "dtype", "numel", "base", "base_offset", "data")

    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.base: _Storage | None = None
        self.base_offset = 0
        self.data: np.ndarray | None = None

    def elements(self) -> np.ndarray:
        """The storage's elements as a 1-D array."""
        if self.base is not None:
            start = self.base_offset
            return self.base.elements()[start : start + self.numel]
        assert self.data is not None, f"storage {self.key} was never read"
        return self.data


class _TensorRef(_Inert):
    """A tensor as pickled: a storage plus offset, shape and strides (all in elements)."""

    __slots__ = ("storage", "offset", "shape", "strides")

    def __init__(self, storage: _Storage, offset: int, shape: tuple, strides: tuple) -> None:
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.strides = strides


class _StateDict(OrderedDict):
    """Stand-in for ``collections.OrderedDict`` that ignores pickled instance state.

    A state dict's ``OrderedDict`` carries a ``_metadata`` attribute (module versions) that a
    reader does not need; dropping all instance state means a pickle cannot shadow the dict's
    methods with attributes of its own.
    """

    def __setstate__(self, state: Any) -> None:
        pass


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(_is_int(v) for v in value)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records the view, checks the types."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(
            f"_rebuild_tensor_v2 expects a storage, got {type(storage).__name__}"
        )
    if not (_is_int(storage_offset) and _int_tuple(size) and _int_tuple(stride)):
        raise pickle.UnpicklingError(
            "_rebuild_tensor_v2 expects an integer offset and integer size and stride tuples"
        )
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in rank")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError(
            f"_rebuild_parameter expects a tensor, got {type(data).__name__}"
        )
    return data


class _Rebuild(_Inert):
    """A callable stand-in for one of torch's rebuild functions."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


# The only globals a state dict's pickle may name, and factories of what each one becomes. Each
# lookup gets a fresh stand-in, so nothing one file does to its objects can reach another read.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("collections", "OrderedDict"): lambda: _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _Rebuild(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): lambda: _Rebuild(_rebuild_parameter),
    **{
        ("torch", name): (lambda name=name, dtype=dtype: _StorageType(name, dtype))
        for name, dtype in STORAGE_DTYPES.items()
    },
}


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of a state dict, to inert stand-ins.

    Args:
        file: the open file, positioned at a pickle.
        path: the file's name, for error messages.
        storages: storages seen so far by key; persistent ids are resolved into it, so tensors
            that share a storage share one :class:`_Storage`.
    """

    def __init__(self, file: BinaryIO, path: Path, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        # Called for every GLOBAL/STACK_GLOBAL opcode, before anything is imported or called:
        # refusing here is what keeps a crafted file from running code.
        try:
            factory = _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self._path}: refuses to load global '{module}.{name}': a state dict holds "
                "only tensors (allowed: " + ", ".join(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS) + ")"
            ) from None
        return factory()

    def persistent_load(self, pid: Any) -> _Storage:
        # ("storage", storage type, key, location, numel, view metadata); the view metadata is
        # None, or (view key, offset, view numel) for the storage views of torch < 0.4.
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self._path}: unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view = pid
        if not (isinstance(storage_type, _StorageType) and isinstance(key, str) and _is_int(numel)):
            raise pickle.UnpicklingError(f"{self._path}: malformed storage reference {pid!r:.80}")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type.dtype, numel)
        elif storage.dtype != storage_type.dtype or storage.numel != numel:
            raise pickle.UnpicklingError(
                f"{self._path}: storage {key} is referenced with two different types or sizes"
            )
        if view is None:
            return storage
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)):
            raise pickle.UnpicklingError(f"{self._path}: malformed storage view {view!r:.80}")
        view_key, offset, view_numel = view
        if not (_is_int(offset) and _is_int(view_numel) and 0 <= offset <= numel - view_numel):
            raise pickle.UnpicklingError(f"{self._path}: storage view {view!r} out of bounds")
        if view_key not in self._storages:
            window = _Storage(view_key, storage.dtype, view_numel)
            window.base, window.base_offset = storage, offset
            self._storages[view_key] = window
        return self._storages[view_key]


def _load_pickle(unpickler: _StateDictUnpickler, path: Path, what: str) -> Any:
    """Load one pickle of the stream, turning low-level failures into errors naming the file."""
    try:
        return unpickler.load()
    except EOFError:
        raise ValueError(f"{path}: truncated file: it ends inside the {what}") from None
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if message.startswith(str(path)):
            raise ValueError(message) from None  # a refusal, already worded for the user
        if "truncated" in message:
            raise ValueError(f"{path}: truncated file: it ends inside the {what}") from None
        raise ValueError(f"{path}: the {what} is not a valid pickle ({message})") from None
    except (TypeError, AttributeError, IndexError, KeyError, ValueError, OverflowError) as exc:
        # E.g. a crafted pickle calling a stand-in with the wrong arguments.
        raise ValueError(
            f"{path}: the {what} is not a state-dict pickle ({exc.__class__.__name__}: {exc})"
        ) from None


def _read_storage(handle: BinaryIO, path: Path, storage: _Storage) -> None:
    """Read one storage's element count and raw bytes from the tail of the file."""
    header = handle.read(8)
    if len(header) < 8:
        raise ValueError(f"{path}: truncated file: storage {storage.key} is missing")
    (numel,) = struct.unpack("<q", header)
    if numel != storage.numel:
        raise ValueError(
            f"{path}: storage {storage.key} holds {numel} elements but the state dict "
            f"declares {storage.numel}"
        )
    nbytes = numel * storage.dtype.itemsize
    raw = handle.read(nbytes)
    if len(raw) < nbytes:
        raise ValueError(
            f"{path}: truncated file: storage {storage.key} needs {nbytes} bytes, "
            f"only {len(raw)} remain"
        )
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _materialise(ref: _TensorRef, path: Path, key: str) -> np.ndarray:
    """Copy a tensor out of its storage as a C-ordered array (float tensors as float32)."""
    flat = ref.storage.elements()
    if any(n < 0 for n in ref.shape) or any(s < 0 for s in ref.strides) or ref.offset < 0:
        raise ValueError(f"{path}: tensor {key!r} has a negative size, stride or offset")
    if 0 in ref.shape:
        array = np.zeros(ref.shape, dtype=flat.dtype)
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.strides, strict=True))
        if last >= flat.size:
            raise ValueError(
                f"{path}: tensor {key!r} (offset {ref.offset}, size {ref.shape}, stride "
                f"{ref.strides}) reaches element {last} of a {flat.size}-element storage"
            )
        # Tensors are views: a transposed weight keeps its storage in another order, so the
        # strides, not the shape alone, say where each element is.
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :],
            shape=ref.shape,
            strides=tuple(s * flat.itemsize for s in ref.strides),
            writeable=False,
        )
        array = np.array(view, order="C")
    if array.dtype.kind == "f":
        array = array.astype(np.float32, copy=False)
    return array


def read_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """Read a legacy-format PyTorch state dict (``.pth``) into numpy arrays, without torch.

    Only the globals a state dict needs are resolved (to local stand-ins); a file naming any
    other global is refused before anything in it is called.

    Args:
        path: a file written by ``torch.save(model.state_dict(), path)`` in the legacy format
            (the default before PyTorch 1.6, or ``_use_new_zipfile_serialization=False``).

    Returns:
        The tensors by state-dict key, in the file's order, as C-ordered arrays of the tensors'
        shapes. Floating-point tensors are float32; integer tensors (e.g. batch norm's
        ``num_batches_tracked``) keep their integer dtype.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is truncated, is in the zip format, is not a pickle, is not a
            state dict, or names a global other than those of a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as handle:
        if handle.read(4) == _ZIP_MAGIC:
            raise ValueError(
                f"{path}: this is PyTorch's zip-based serialization format (the default since "
                "torch 1.6); only the legacy (pre-zip) format is supported. Re-save it with "
                "torch.save(state_dict, path, _use_new_zipfile_serialization=False)."
            )
        handle.seek(0)
        storages: dict[str, _Storage] = {}
        unpickler = _StateDictUnpickler(handle, path, storages)
        try:
            magic = unpickler.load()
        except pickle.UnpicklingError as exc:
            if str(exc).startswith(str(path)):
                raise ValueError(str(exc)) from None  # a refused global
            raise ValueError(
                f"{path}: not a PyTorch state dict: the file does not start with a pickle ({exc})"
            ) from None
        except (EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            # Arbitrary bytes read as pickle opcodes fail in many ways; all mean "not a pickle".
            raise ValueError(
                f"{path}: not a PyTorch state dict: the file does not start with a pickle "
                f"({exc.__class__.__name__}: {exc})"
            ) from None
        if magic != MAGIC_NUMBER:
            raise ValueError(
                f"{path}: not a legacy PyTorch file: expected the magic number "
                f"{MAGIC_NUMBER:#x} as its first pickle, found {magic!r:.60}"
            )
        version = _load_pickle(unpickler, path, "protocol version")
        if version != PROTOCOL_VERSION:
            raise ValueError(
                f"{path}: unsupported legacy protocol version {version!r} "
                f"(expected {PROTOCOL_VERSION})"
            )
        sys_info = _load_pickle(unpickler, path, "system information")
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise ValueError(f"{path}: only little-endian legacy files are supported")

        state = _load_pickle(unpickler, path, "state dict")
        keys = _load_pickle(unpickler, path, "storage key list")
        if not isinstance(state, dict):
            raise ValueError(
                f"{path}: expected a state dict (a mapping of names to tensors), found "
                f"{type(state).__name__}"
            )
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            raise ValueError(f"{path}: the storage key list is not a list of strings")
        missing = sorted(set(keys) - set(storages))
        if missing:
            raise ValueError(f"{path}: storage keys {missing[:5]} are never referenced")

        # The data follow the key list in exactly that order, one storage after another.
        for key in keys:
            if storages[key].base is not None:
                raise ValueError(f"{path}: storage view {key} has its own data block")
            _read_storage(handle, path, storages[key])
        unread = [s.key for s in storages.values() if s.base is None and s.data is None]
        if unread:
            raise ValueError(f"{path}: storages {unread[:5]} have no data in the file")

    tensors: dict[str, np.ndarray] = {}
    # dict.items, not state.items: the mapping came out of a pickle and is only trusted as data.
    for key, value in dict.items(state):
        if not isinstance(key, str) or not isinstance(value, _TensorRef):
            raise ValueError(
                f"{path}: entry {key!r:.60} is a {type(value).__name__}, not a tensor; "
                "expected a state dict of tensors"
            )
        tensors[key] = _materialise(value, path, key)
    return tensors
