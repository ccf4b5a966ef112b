"""The restricted unpickler loads numpy arrays and containers and runs no code."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from robustmsa.data.safe_pickle import safe_load
from robustmsa.errors import DataError


class _ShellPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _OpenPayload:
    """Uses a builtin that is not a plain container: open(marker, 'w') creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_loads_arrays_and_containers(tmp_path: Path, protocol: int) -> None:
    data = {
        "train": {
            "text": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
            "id": np.array(["a$_$1", "b$_$2"], dtype=object),
            "names": np.array(["x", "yy"]),
            "scalar": np.float64(2.5),
        },
        "extra": OrderedDict(a=[1, 2.0, "s", (3, 4), {5}, b"raw", True, 1j]),
    }
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    out = safe_load(path)
    assert np.array_equal(out["train"]["text"], data["train"]["text"]) and out["train"]["text"].dtype == np.float32
    assert out["train"]["id"].tolist() == ["a$_$1", "b$_$2"] and out["train"]["names"].tolist() == ["x", "yy"]
    assert out["train"]["scalar"] == 2.5
    assert out["extra"] == data["extra"]


@pytest.mark.parametrize("payload", [_ShellPayload, _OpenPayload])
def test_refuses_code_and_never_runs_it(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": payload(marker)}))
    with pytest.raises(DataError) as info:
        safe_load(path)
    assert "refusing to unpickle" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def test_the_payload_is_real(tmp_path: Path) -> None:
    """The open() payload does create its marker under the unrestricted unpickler (so the test above can fail)."""
    marker = tmp_path / "made"
    handle = pickle.loads(pickle.dumps(_OpenPayload(marker)))
    handle.close()
    assert marker.exists()


def test_refuses_other_numpy_globals(tmp_path: Path) -> None:
    path = tmp_path / "np.pkl"
    path.write_bytes(pickle.dumps(np.load))
    with pytest.raises(DataError, match="numpy.*load"):
        safe_load(path)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        safe_load(tmp_path / "absent.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="bad.pkl"):
        safe_load(bad)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"c_codecs\nencode\n(X\x03\x00\x00\x00abcX\x0b\x00\x00\x00nonexistenttR.", "not a readable pickle: LookupError"),  # unknown codec
        (b"\x80\x04\x95" + b"\xff" * 8 + b".", "not a readable pickle: OverflowError"),  # a FRAME longer than memory
        (b"cbuiltins\nbytearray\n(\x8a\x06\x00\x00\x00\x00\x00\x10tR.", "refusing to unpickle builtins.bytearray"),  # bytearray(2**60)
    ],
)
def test_absurd_pickles_are_data_errors(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "odd.pkl"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=rf"odd\.pkl: {message}"):
        safe_load(path)


def test_a_directory_is_not_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory; expected a pickle file"):
        safe_load(tmp_path)
