"""The probe: the trusted code that runs *inside* the sandbox, next to a student's answers.

The hardened grader (:mod:`.hardened`) starts it in the sandbox with a plan on standard input (the
canonical cells, the exercises in order) and, per exercise, two open files of the grader's that the
sandbox cannot otherwise see: a **job** to read (that exercise's inputs, and slices of the course
holding exactly the earlier exercises' references it is checked with, see :mod:`.slices`) and a
**result** to write. It runs as a small process tree:

* the **zygote** imports torch once and runs the course's setup cell (trusted code). It never runs
  a line of the student's code and never reads a job: it makes itself non-dumpable, so that no
  other process of the sandbox can trace it or open its files, and forks, per exercise,
* a **child** that closes every file but its own job and result, reads its job, runs the
  student's cells, calls the student's function on each input and writes back what came out as
  plain numbers. The child sees its own exercise's inputs and the references of the exercises it
  builds on (graded earlier, their results already written), and nothing else of the course's
  answers. When it ends, the zygote kills every other process in the sandbox and empties the
  writable folders, so nothing one child left behind reaches the next.

The zygote reports each exercise's start and end, and each cell it had to leave out, on a third
file of the grader's. Nothing a child writes is trusted: the grader reads the results after the
whole sandbox has ended and compares them with the reference outside.
"""

from __future__ import annotations

import builtins
import json
import linecache
import os
import select
import shutil
import signal
import struct
import sys
import time
import traceback
import types
from typing import Any, NamedTuple

MAGIC = b"TCR1"  # a result file: MAGIC, the header's length (8 bytes), the header (JSON), the arrays
MAX_OUTPUT_BYTES = 12 * 1024**2  # of arrays in one result (the grader reads at most 16 MB of file)


# --------------------------------------------------------------------------- results


def beyond_64_bits(value) -> bool:
    """An integer no honest answer holds (integers of such size can share one hash by the thousand)."""
    return isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63


def encode(value, blob: bytearray):
    """A JSON description of ``value``; tensors go into ``blob`` as raw bytes."""
    import torch

    if isinstance(value, torch.Tensor):
        tensor = torch.Tensor.as_subclass(value.detach(), torch.Tensor).cpu()  # plain data only
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        data = tensor.contiguous().numpy().tobytes()
        offset = len(blob)
        blob += data
        return {"tensor": {"dtype": dtype, "array": str(tensor.numpy().dtype), "shape": list(tensor.shape),
                           "offset": offset, "nbytes": len(data), "device": str(value.device)}}
    if beyond_64_bits(value):
        return {"unsupported": "int beyond 64 bits"}  # (the grader refuses them: see hardened._decode)
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple": [encode(v, blob) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k, blob), encode(v, blob)] for k, v in value.items()]}
    return {"unsupported": type(value).__name__}


def write_result(fd: int, record: dict, blob: bytes) -> None:
    header = json.dumps(record).encode("utf-8")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    data = MAGIC + struct.pack("<Q", len(header)) + header + blob
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --------------------------------------------------------------------------- the child


def _short(error: BaseException) -> str:
    return traceback.format_exception_only(type(error), error)[-1].strip()[:500]


def _install_slices(slices: dict[str, str]) -> None:
    """Make each slice importable under its module's own name (see :mod:`.slices`)."""
    for name, source in slices.items():
        parts = name.split(".")
        for i in range(1, len(parts)):  # parent packages the slice needs to be imported by name
            parent = ".".join(parts[:i])
            if parent not in sys.modules:
                package = types.ModuleType(parent)
                package.__path__ = []
                sys.modules[parent] = package
        module = types.ModuleType(name)
        sys.modules[name] = module
        exec(compile(source, f"<course slice {name}>", "exec"), module.__dict__)  # noqa: S102 - trusted


def _read_job(fd: int) -> dict:
    import pickle

    size = os.fstat(fd).st_size
    data, offset = bytearray(), 0
    while offset < size:
        chunk = os.pread(fd, min(1 << 20, size - offset), offset)
        if not chunk:
            break
        data += chunk
        offset += len(chunk)
    slices_length = struct.unpack("<Q", data[:8])[0]
    slices = json.loads(data[8:8 + slices_length])
    _install_slices(slices)  # before unpickling: the inputs may be objects of sliced classes
    return pickle.loads(bytes(data[8 + slices_length:]))  # noqa: S301 - written by the grader


def _keep_only(fds: set[int]) -> None:
    """Close every open file but ``fds`` (and standard output and error)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _step(pipe: int, line: str) -> None:
    try:
        os.write(pipe, (line + "\n").encode())
    except OSError:
        pass


def _run_cells(cells: list[dict], namespace: dict, skip: set[int], pipe: int) -> list[dict]:
    """Run the student's cells in order, as a notebook kernel would; errors are recorded."""
    errors = []
    for index, cell in enumerate(cells):
        if index in skip or cell["kind"] == "setup":
            continue
        _step(pipe, f"cell {index}")
        try:
            name = cell["grade_id"] or f"added {index}"
            filename = f"<cell {name}>"
            # As IPython does for a notebook's cells: a message can then quote the student's own
            # line ("in your line: ..."), and the look at the source reads it, as in the notebook.
            linecache.cache[filename] = (len(cell["source"]), None, cell["source"].splitlines(True), filename)
            exec(compile(cell["source"], filename, "exec"), namespace)  # noqa: S102 - the point
        except BaseException as error:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
            errors.append({"cell": index, "grade_id": cell["grade_id"], "kind": cell["kind"],
                           "error": _short(error)})
    return errors


class Tools(NamedTuple):
    """The probe's checking functions (a tuple: a student's code that finds it cannot rebind them)."""

    get: Any
    ExerciseFailure: Any
    call_student: Any
    expect_right_kind: Any
    forbidden_message: Any
    static_violation: Any
    watcher: Any
    with_globals: Any
    encode: Any
    write_result: Any


def _checking_tools() -> Tools:
    """The functions the probe checks with, taken before any of the student's code runs: code that
    later rebinds them in their modules (compare.call_student = ...) does not change these. (Code
    that rewrites what they use in turn still could: see the threat model; numbers are compared
    outside, where nothing of the student's reaches.)"""
    from transformer_course import exercises
    from transformer_course.exercises import ExerciseFailure
    from transformer_course.exercises.compare import call_student, expect_right_kind
    from transformer_course.exercises.forbidden import forbidden_message, static_violation
    from transformer_course.exercises.running import watcher, with_globals

    return Tools(
        get=exercises.get, ExerciseFailure=ExerciseFailure, call_student=call_student,
        expect_right_kind=expect_right_kind, forbidden_message=forbidden_message,
        static_violation=static_violation, watcher=watcher, with_globals=with_globals,
        encode=encode, write_result=write_result)


def _probe(function: str, cases: list, namespace: dict, dependencies: dict, tools: Tools) -> tuple[dict, bytearray]:
    """Call the student's function on every case; the record of what came back, and its arrays."""
    ExerciseFailure, encode = tools.ExerciseFailure, tools.encode  # noqa: N806 - local names of the tools
    call_student, watcher, with_globals = tools.call_student, tools.watcher, tools.with_globals
    exercise = tools.get(function)
    record: dict = {"calls": [], "failure": None}
    blob = bytearray()
    fn = namespace.get(function)
    try:
        if fn is None:
            raise ExerciseFailure(
                f"`{function}` is not defined: run the cell that defines it, and keep the name "
                f"`{function}` (the checks look it up by name)."
            )
        tools.expect_right_kind(exercise, fn)
        violation = tools.static_violation(exercise, fn, dependencies)
        if violation:
            raise ExerciseFailure(tools.forbidden_message(exercise, violation))
    except ExerciseFailure as failure:
        record["failure"] = str(failure)
        return record, blob
    student = with_globals(fn, dependencies)
    watch = watcher(exercise, dependencies)
    for case in cases:
        try:
            outputs = call_student(exercise, student, case, watch)
        except ExerciseFailure as failure:
            record["calls"].append({"failure": str(failure)})
            break  # later cases would not be looked at: the first failure is the message
        except BaseException as error:  # noqa: BLE001 - e.g. SystemExit raised by the student's code
            record["calls"].append({"failure": f"`{function}` raised {type(error).__name__}: {error}"})
            break
        size = len(blob)
        encoded = [encode(o, blob) for o in outputs]
        if len(blob) > MAX_OUTPUT_BYTES:  # the grader would refuse the file: say why, here
            returned = _megabytes(len(blob) - size)
            del blob[size:]
            record["calls"].append({"failure": f"`{function}` returned {returned} on {case.label}: far more "
                                               "than any check needs."})
            break
        record["calls"].append({"outputs": encoded})
    return record, blob


def _megabytes(count: int) -> str:
    return f"{count / 1024**2:.0f} MB of numbers"


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def child(plan: dict, exercise: dict, skip: set[int], pipe: int, namespace: dict, threads: int) -> None:
    """One exercise, in a fresh process forked from the zygote; never returns."""
    code = 0
    try:
        _keep_only({exercise["job_fd"], exercise["result_fd"], pipe})
        try:  # if memory runs short, the kernel should end this process before the zygote
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        job = _read_job(exercise["job_fd"])
        os.close(exercise["job_fd"])
        tools, probe = _checking_tools(), _probe  # (taken before the student's cells can rebind them)
        errors = _run_cells(plan["cells"], namespace, skip, pipe)
        _step(pipe, "probe")
        if _threads() > threads:
            # The student's cells left threads running. Those were started before the run-time
            # watch and it cannot see them, so the calls are made in a fork of this process,
            # which has no thread but the one that forks.
            pid = os.fork()
            if pid:
                _, status = os.waitpid(pid, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        dependencies = job["dependencies"]
        record, blob = probe(exercise["function"], job["cases"], namespace, dependencies, tools)
        record["cell_errors"] = errors
        tools.write_result(exercise["result_fd"], record, bytes(blob))
        _step(pipe, "done")
    except BaseException:  # noqa: BLE001 - whatever happened, this process ends here
        traceback.print_exc()
        code = 70
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# --------------------------------------------------------------------------- the zygote


def _non_dumpable() -> None:
    """No process of the sandbox may trace this one or open its files through /proc."""
    import ctypes

    PR_SET_DUMPABLE = 4
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _end_everything_else(sandboxed: bool, child_pid: int) -> None:
    """SIGKILL every other process of the sandbox (its pid namespace's init is spared by the
    kernel). Without a sandbox (trusted code only) that would be every process of the user:
    then only the child's process group is ended."""
    target = -1 if sandboxed else -child_pid
    try:
        os.kill(target, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _empty(folder: str) -> None:
    """Remove everything in ``folder`` (what the last child wrote), however it was left."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for name in entries:
        path = os.path.join(folder, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                shutil.rmtree(path, onerror=_make_writable)
            else:
                os.unlink(path)
        except OSError:
            pass


def _make_writable(function, path, _info) -> None:
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path):
            os.chmod(path, 0o700)
        function(path)
    except OSError:
        pass


class Reporter:
    """The zygote's progress, as JSON lines on the grader's progress file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, **event) -> None:
        os.write(self.fd, (json.dumps(event) + "\n").encode("utf-8"))


def _wait(pid: int, pipe: int, seconds: float, times: dict[str, float]) -> tuple[str, int | None, bool]:
    """Follow a child's steps until it ends or runs out of time: (its last step, its exit status
    or None when it was stopped, whether it ran out of time). ``times`` gets when each kind of
    step was first seen ("cell", "probe", "done")."""
    deadline = time.monotonic() + seconds
    last, buffer, timed_out = "", b"", False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([pipe], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(pipe, 4096)
            if not chunk:
                break  # every writer closed it: the child ended, or its code closed the pipe
            buffer = (buffer + chunk)[-4096:]
            lines = buffer.split(b"\n")
            complete = [line for line in lines[:-1] if line]
            for line in complete:
                times.setdefault(line.split(b" ")[0][:16].decode("ascii", "replace"), time.monotonic())
            if complete:
                last = complete[-1][:64].decode("ascii", "replace")
            buffer = lines[-1]
        else:
            ended, status = os.waitpid(pid, os.WNOHANG)
            if ended:
                return last, status, False
    while not timed_out:  # the pipe closed (the student's code may close it): wait, but not forever
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            return last, status, False
        if time.monotonic() > deadline:
            timed_out = True
        else:
            time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    return last, None, True


def _phases(times: dict[str, float]) -> dict[str, float]:
    """Seconds a child spent starting (reading its job), running the cells, making the calls, and
    the zygote spent cleaning up after it; for the grader's figures."""
    marks = [times["fork"], times.get("cell", times.get("probe")), times.get("probe"), times.get("done"),
             times["clean"]]
    names = ("start", "cells", "calls", "cleanup")
    phases, previous = {}, marks[0]
    for name, mark in zip(names, marks[1:]):
        if mark is not None:
            phases[name] = round(mark - previous, 6)
            previous = mark
    return phases


def _how(status: int | None, timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    if status is None:
        return "unknown"
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


def run_exercise(plan: dict, exercise: dict, skip: set[int], report: Reporter, namespace: dict,
                 threads: int, deadline: float) -> None:
    """Fork children for one exercise until it is checked, or stopped for a reason the grader will
    give. A child that dies or hangs in a cell that is not this exercise's answer is run again
    without that cell (later exercises then run without it too)."""
    report(event="exercise", function=exercise["function"])
    while True:
        seconds = min(plan["child_seconds"], deadline - time.monotonic())
        if seconds < 1:
            report(event="ended", function=exercise["function"], how="budget", where="")
            return
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.setpgid(0, 0)
            child(plan, exercise, skip, write_end, namespace, threads)
        os.close(write_end)
        times = {"fork": time.monotonic()}
        last, status, timed_out = _wait(pid, read_end, seconds, times)
        os.close(read_end)
        _end_everything_else(plan["sandboxed"], pid)
        for folder in plan["wipe"]:  # what the child wrote: the next one starts clean
            _empty(folder)
        times["clean"] = time.monotonic()
        how = "done" if last == "done" and status == 0 else _how(status, timed_out)
        report(event="times", function=exercise["function"], **_phases(times))
        words = last.split()
        cell = int(words[1]) if len(words) == 2 and words[0] == "cell" and words[1].isdigit() else None
        if how == "done" or cell is None:
            report(event="ended", function=exercise["function"], how=how, where=last if how != "done" else "")
            return
        answer = plan["cells"][cell]["grade_id"] if cell < len(plan["cells"]) else None
        if answer == exercise["function"] or cell >= len(plan["cells"]):
            report(event="ended", function=exercise["function"], how=how, where=f"cell {cell}")
            return
        skip.add(cell)  # another exercise's answer, or a cell the student added: leave it out
        report(event="skip", cell=cell, how=how)


def main() -> int:
    _non_dumpable()
    plan = json.loads(sys.stdin.buffer.read())
    report = Reporter(plan["progress_fd"])
    sys.path[:0] = plan["path"]  # the package copy and the libraries (run with -I -S: nothing else)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import numpy  # noqa: F401 - imported once here, for every child
    import torch

    torch.set_num_threads(1)
    deadline = time.monotonic() + plan["total_seconds"]
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for cell in plan["cells"]:  # the course's own setup: trusted, run once for every child
        if cell["kind"] == "setup":
            exec(compile(cell["source"], "<cell setup>", "exec"), namespace)  # noqa: S102
    # torch's dispatch modes, which the run-time watch uses, made ready once here for every child:
    # their first use costs a second or more (they import torch._dynamo).
    from transformer_course.exercises.forbidden import prepare_watch

    prepare_watch()
    report(event="start")
    threads = _threads()
    skip = set(plan["skip_cells"])
    for exercise in plan["exercises"]:
        run_exercise(plan, exercise, skip, report, namespace, threads, deadline)
        # Its job and result are closed here, so no later child of any exercise can reach them.
        os.close(exercise["job_fd"])
        os.close(exercise["result_fd"])
    report(event="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
