"""Reading what the sandbox wrote: as hostile input, strictly, with sizes checked before decoding.

The probe writes each exercise's result as MAGIC, a header length, a JSON header and raw arrays
(:func:`transformer_course.grading.probe.write_result`); a student's code can write anything there
instead. These tests hand :func:`read_result` what an attacker would, and check each is refused,
quickly and without the grader holding more than the file.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import threading
import time

import pytest
import torch

from transformer_course.grading.hardened import MAX_HEADER_BYTES, read_progress, read_result
from transformer_course.grading.probe import MAGIC, encode, write_result


def _write(path, header, blob: bytes = b"") -> None:
    data = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<Q", len(data)) + data + blob)


def test_what_the_probe_writes_reads_back_exactly(tmp_path):
    outputs = (torch.randn(3, 4, dtype=torch.float64), torch.arange(5), {"a": [1, (2, 3)], "b": None},
               torch.tensor([True, False]), torch.randn(2, dtype=torch.float32))
    blob = bytearray()
    record = {"calls": [{"outputs": [encode(o, blob) for o in outputs]}, {"failure": "it raised"}],
              "failure": None, "cell_errors": [{"cell": 1, "grade_id": "softmax", "kind": "answer", "error": "E"}]}
    fd = os.open(tmp_path / "result", os.O_WRONLY | os.O_CREAT)
    write_result(fd, record, bytes(blob))
    os.close(fd)
    read = read_result(tmp_path / "result")
    got = read["calls"][0]["outputs"]
    for a, b in zip(got, outputs):
        assert torch.equal(a, b) and a.dtype == b.dtype if isinstance(b, torch.Tensor) else a == b
    assert read["calls"][1] == {"failure": "it raised"} and read["cell_errors"][0]["grade_id"] == "softmax"


TENSOR = {"dtype": "float64", "array": "float64", "shape": [2], "offset": 0, "nbytes": 16, "device": "cpu"}


def _with_tensor(**changes) -> dict:
    return {"calls": [{"outputs": [{"tensor": {**TENSOR, **changes}}]}]}


def colliding_pairs(count: int, target: int = 12345) -> list[tuple[int, int]]:
    """``count`` pairs ``(a, b)`` of one hash: CPython's tuple hash (xxHash's steps) solved for
    ``b``'s hash, which for an integer below 2**61 - 1 is the integer itself."""
    mask, prime1, prime2, prime5 = (1 << 64) - 1, 11400714785074694791, 14029467366897019727, 2870177450012600261
    inverse, pairs, a = pow(prime2, -1, 1 << 64), [], 0
    while len(pairs) < count:
        acc = (prime5 + (hash(a) & mask) * prime2) & mask
        acc = (((acc << 31) | (acc >> 33)) & mask) * prime1 & mask
        wanted = ((target - acc) * inverse) & mask
        b = wanted - (1 << 64) if wanted >= 1 << 63 else wanted
        if -((1 << 61) - 1) < b < (1 << 61) - 1 and b != -1 and hash(b) == b:
            pairs.append((a, b))
        a += 1
    return pairs


FORGED = {
    "a tensor larger than its bytes": (_with_tensor(shape=[1 << 20, 1 << 20], nbytes=16), b"\0" * 16),
    "a shape whose product overflows 64 bits": (_with_tensor(shape=[1 << 32, 1 << 32, 1], nbytes=0), b""),
    "bytes beyond the file": (_with_tensor(offset=8), b"\0" * 16),
    "a negative offset": (_with_tensor(offset=-8), b"\0" * 16),
    "an array of Python objects": (_with_tensor(array="object", nbytes=16), b"\0" * 16),
    "a dict with a list for a key": ({"calls": [{"outputs": [{"dict": [[{"list": []}, {"value": 1}]]}]}]}, b""),
    "a value that is not one": ({"calls": [{"outputs": [{"value": {"x": 1}}]}]}, b""),
    "two kinds in one value": ({"calls": [{"outputs": [{"value": 1, "list": []}]}]}, b""),
    "too many calls": ({"calls": [{"failure": "x"}] * 10_001}, b""),
    "not a record": ([1, 2, 3], b""),
    # 49,990 distinct keys of one hash: building the dict was quadratic, 25 s of the grader's time
    # (the fifth round of the attack)
    "keys that share one hash": ({"calls": [{"outputs": [{"dict": [
        [{"value": (10**30 + k) * ((1 << 61) - 1)}, {"value": 0}] for k in range(49_990)]}]}]}, b""),
    # ... and pairs (a, b), b solved for one tuple hash (the sixth round): 10 s per file
    "pairs that share one hash": ({"calls": [{"outputs": [{"dict": [
        [{"tuple": [{"value": a}, {"value": b}]}, {"value": 0}] for a, b in colliding_pairs(2_000)]}]}]}, b""),
}


@pytest.mark.parametrize("how", FORGED)
def test_a_forged_result_is_refused(tmp_path, how):
    header, blob = FORGED[how]
    _write(tmp_path / "result", header, blob)
    read = read_result(tmp_path / "result")
    assert isinstance(read, str) and "could not be read back" in read, read


def test_the_colliding_pairs_do_share_one_hash():
    """(So the forged file above tests what it says.)"""
    assert len({hash(p) for p in colliding_pairs(50)}) == 1


def test_an_integer_beyond_64_bits_is_written_as_unsupported_and_refused_where_forged(tmp_path):
    blob = bytearray()
    assert encode(2**64, blob) == {"unsupported": "int beyond 64 bits"}
    assert encode(2**63 - 1, blob) == {"value": 2**63 - 1}
    _write(tmp_path / "result", {"calls": [{"outputs": [{"value": 2**64}]}]}, b"")
    assert "ValueError" in read_result(tmp_path / "result")


def test_deep_nesting_is_refused(tmp_path):
    _write(tmp_path / "result", b'{"calls": [{"outputs": [' + b'{"list": [' * 5000 + b']}' * 5000 + b"]}]}")
    assert "could not be read back" in read_result(tmp_path / "result")


def test_a_header_of_empty_lists_costs_little(tmp_path):
    """The biggest header allowed, all empty lists (Python makes a 56-byte object of each 3 bytes):
    read in well under a second and a few hundred MB; one a byte bigger is not parsed at all."""
    body = b"[" + b"[]," * ((MAX_HEADER_BYTES - 2) // 3 - 1) + b"[]]"
    _write(tmp_path / "result", body)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    assert "could not be read back" in read_result(tmp_path / "result")
    assert time.perf_counter() - start < 5
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 512 * 1024**2
    _write(tmp_path / "result", b" " * (MAX_HEADER_BYTES + 1))
    assert "far too large" in read_result(tmp_path / "result")


def test_a_file_beyond_the_cap_is_not_read(tmp_path):
    with (tmp_path / "result").open("wb") as f:
        f.truncate(65 * 1024**2)  # sparse: costs no disk
    assert "far too large" in read_result(tmp_path / "result")


def test_the_sandbox_cannot_write_a_result_much_larger_than_the_grader_reads(tmp_path):
    """Each exercise's result file is written from inside the sandbox onto the grader's disk:
    the sandbox's file-size limit keeps it just above what the grader would read (16 MiB), so a
    submission's results take some 17 MiB per exercise, not 64."""
    from transformer_course.grading.hardened import MAX_RESULT_BYTES
    from transformer_course.grading.sandbox import Limits

    assert MAX_RESULT_BYTES < Limits().file_bytes <= MAX_RESULT_BYTES + 2 * 1024**2
    with (tmp_path / "result").open("wb") as f:
        f.truncate(MAX_RESULT_BYTES + 1)
    assert "far too large" in read_result(tmp_path / "result")


def test_links_and_pipes_are_never_followed_or_opened(tmp_path):
    (tmp_path / "secret").write_text('{"calls": []}')
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    os.mkfifo(tmp_path / "pipe")
    finished = []
    reader = threading.Thread(target=lambda: finished.append(
        (read_result(tmp_path / "link"), read_result(tmp_path / "pipe"), read_progress(tmp_path / "pipe"))))
    reader.start()
    reader.join(timeout=10)
    assert finished, "reading a pipe blocked the grader"
    link, pipe, progress = finished[0]
    assert "could not be read back" in link and "could not be read back" in pipe and progress == []


def test_progress_lines_are_read_strictly(tmp_path):
    lines = [b'{"event": "start"}', b"not json", b"[1, 2]", b'{"event": "x", "pad": "' + b"y" * 5000 + b'"}',
             b'{"event": "done"}']
    (tmp_path / "progress").write_bytes(b"\n".join(lines))
    assert read_progress(tmp_path / "progress") == [{"event": "start"}, {"event": "done"}]


def test_values_that_are_not_numbers_cost_one_class_each_kind(tmp_path):
    """99,990 objects of as many classes come back as "unsupported" values of one class (a class
    each made it 280 MB, a class per name 1.2 GB: the second and third rounds of the attack)."""
    header = {"calls": [{"outputs": [{"list": [{"unsupported": f"k{i}"} for i in range(99_990)]}]}]}
    _write(tmp_path / "result", header)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    read = read_result(tmp_path / "result")
    (values,) = read["calls"][0]["outputs"]
    assert len({type(v) for v in values}) == 1 and repr(values[7]) == "<a k7>"
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 100 * 1024**2
