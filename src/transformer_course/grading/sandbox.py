"""Running untrusted code in a disposable sandbox: bubblewrap plus resource limits.

One call of :func:`run_sandboxed` runs one command (a student's notebook, via the probe) with:

* **no network** and private process, IPC, UTS and user namespaces (``bwrap --unshare-all``);
* **a read-only system**: only the operating system, the Python installation and the packages
  the command needs are mounted, read-only; nothing else of the machine exists inside (not the
  course repository, not the gradebook, not other students' files);
* **one writable folder**, the submission's private working folder, mounted at ``/submission``, and a
  private empty ``/tmp``;
* **limits** on memory (address space), CPU time, number of processes, size of files written
  and size of output read back (:class:`Limits`);
* **a wall-clock kill** that ends every process the command started: the command is pid 1 of its
  own pid namespace, and when it dies the kernel ends everything else inside.

bubblewrap works for ordinary users through unprivileged user namespaces; :func:`sandbox_problem`
says, in words, why it cannot be used on a machine where it is missing or not permitted.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

INSIDE = "/submission"  # where the private working folder appears inside the sandbox

GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use. The defaults fit a chapter's notebook with room to spare."""

    memory_bytes: int = 4 * GiB  # address space; torch alone maps about 1 GiB on import
    cpu_seconds: int = 120  # CPU time, all threads together
    wall_seconds: float = 180.0  # real time, then everything inside is killed
    processes: int = 64  # processes and threads the command may add
    file_bytes: int = 64 * MiB  # largest file it may write
    output_bytes: int = 2 * MiB  # stdout and stderr each; beyond that the run is stopped


@dataclass
class SandboxResult:
    """How a sandboxed run ended."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool = False
    output_overflow: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ended_by(self) -> str | None:
        """Why the run was stopped or died, in words; None when it exited by itself, cleanly or not."""
        if self.timed_out:
            return "it ran out of time and was stopped"
        if self.output_overflow:
            return "it printed too much output and was stopped"
        # Killed by a signal: a negative code from bwrap itself, or 128 + signal from bwrap
        # reporting how the command inside died.
        number = None
        if self.returncode is not None and self.returncode < 0:
            number = -self.returncode
        elif self.returncode is not None and 128 < self.returncode <= 128 + 64:
            number = self.returncode - 128
        if number is not None:
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = str(number)
            reason = {
                "SIGKILL": "it was killed (usually: it used more memory or CPU time than allowed)",
                "SIGXCPU": "it used more CPU time than allowed",
                "SIGXFSZ": "it wrote a file larger than allowed",
                "SIGSEGV": "it crashed (segmentation fault)",
            }.get(name)
            return reason or f"it was ended by signal {name}"
        return None


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


_PROBLEM: list[str | None] = []


def sandbox_problem() -> str | None:
    """Why the sandbox cannot run here, or None when it can (checked once, by running it)."""
    if _PROBLEM:
        return _PROBLEM[0]
    bwrap = bwrap_path()
    if bwrap is None:
        problem = (
            "bubblewrap (bwrap) is not installed, so student code cannot be sandboxed. Install it "
            "(Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install bubblewrap)."
        )
    else:
        try:
            run = subprocess.run(
                [bwrap, *_system_binds([]), "--unshare-all", "--die-with-parent", "--dev", "/dev",
                 "--proc", "/proc", "--tmpfs", "/tmp", "--", "/bin/true"],
                capture_output=True, text=True, timeout=30,
            )
            problem = None if run.returncode == 0 else (
                f"bubblewrap is installed but cannot create a sandbox here: {run.stderr.strip()}. "
                "It needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "and on Ubuntu 24.04+ an AppArmor profile allowing bwrap to use them)."
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            problem = f"bubblewrap could not be started: {error}"
    _PROBLEM.append(problem)
    return problem


def _system_binds(extra_read_only: Sequence[Path]) -> list[str]:
    """bwrap arguments mounting the operating system and Python read-only, and nothing else."""
    args: list[str] = []
    for path in ("/usr", "/etc", "/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    python_homes = {Path(sys.base_prefix).resolve(), Path(sys.base_exec_prefix).resolve()}
    for path in (*sorted(python_homes), *extra_read_only):
        path = Path(path).resolve()
        if not str(path).startswith(("/usr/", "/lib")):
            args += ["--ro-bind", str(path), str(path)]
    return args


def _count_own_processes() -> int:
    """How many processes this user has now (RLIMIT_NPROC counts them all)."""
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                continue
    return count


class _PidsCgroup:
    """A pids cgroup that caps the number of tasks, for when the grader runs as root.

    RLIMIT_NPROC is what limits an ordinary user's processes, but the kernel never applies it
    to uid 0, whatever namespace or capabilities the process has. Root can make a cgroup
    instead (cgroup v2, or v1's pids hierarchy); everything the sandbox starts joins it, and
    removing it at the end ends whatever is left.
    """

    def __init__(self, max_tasks: int) -> None:
        self.path: Path | None = None
        for parent in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
            if (parent / "cgroup.procs").exists() and os.access(parent, os.W_OK):
                if parent.name != "pids" and "pids" not in (parent / "cgroup.controllers").read_text().split():
                    continue
                path = parent / f"transformer-course-{os.getpid()}-{time.monotonic_ns()}"
                try:
                    path.mkdir()
                    (path / "pids.max").write_text(str(max_tasks))
                except OSError:
                    continue
                self.path = path
                break

    def join(self) -> None:  # in the child, before exec
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        if self.path is None:
            return
        for _ in range(50):
            pids = (self.path / "cgroup.procs").read_text().split()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        try:
            self.path.rmdir()
        except OSError:
            pass


def _limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value if hard == resource.RLIM_INFINITY else hard))


def run_sandboxed(
    argv: Sequence[str],
    workdir: Path,
    *,
    limits: Limits = Limits(),
    read_only: Sequence[Path] = (),
    env: dict[str, str] | None = None,
    stdin: bytes = b"",
) -> SandboxResult:
    """Run ``argv`` in a fresh sandbox whose only writable folder is ``workdir`` (at ``/submission``).

    ``read_only`` lists more host folders to mount read-only at the same path (a virtual
    environment's packages, say). The environment is empty apart from ``env``, ``HOME=/submission``
    and a plain ``PATH``. Raises RuntimeError when the sandbox cannot run (see sandbox_problem).
    """
    problem = sandbox_problem()
    if problem:
        raise RuntimeError(problem)
    environment = {"HOME": INSIDE, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                   "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    # /tmp first: the read-only folders may lie under /tmp (a course cloned there), and a
    # tmpfs mounted after them would hide them.
    command = [bwrap_path(), "--tmpfs", "/tmp", *_system_binds(read_only)]
    command += [
        "--unshare-all",  # no network, own pid/ipc/uts/cgroup namespaces
        "--unshare-user",  # and a user namespace even when started by root: no capabilities,
        "--cap-drop", "ALL",  # so the process limit below holds for root too
        "--die-with-parent",  # if the grader dies, so does the sandbox
        "--new-session",  # no access to the grader's terminal
        "--dev", "/dev", "--proc", "/proc",
        "--bind", str(workdir.resolve()), INSIDE, "--chdir", INSIDE,
        "--remount-ro", "/",  # the sandbox's own root folder is read-only too
        "--clearenv",
    ]
    for key, value in environment.items():
        command += ["--setenv", key, value]
    command += ["--", *argv]

    processes = _count_own_processes() + limits.processes
    cgroup = _PidsCgroup(limits.processes) if os.getuid() == 0 else None
    notes = []
    if cgroup is not None and cgroup.path is None:
        notes.append("running as root without a pids cgroup: the number of processes is not limited")

    def apply_limits() -> None:  # runs in the child, before bwrap starts
        if cgroup is not None:
            cgroup.join()
        _limit(resource.RLIMIT_AS, limits.memory_bytes)
        _limit(resource.RLIMIT_CPU, limits.cpu_seconds)
        _limit(resource.RLIMIT_FSIZE, limits.file_bytes)
        _limit(resource.RLIMIT_NPROC, processes)
        _limit(resource.RLIMIT_CORE, 0)

    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=apply_limits, start_new_session=True,
    )
    overflow = threading.Event()
    streams: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def drain(name: str, pipe) -> None:
        buffer = streams[name]
        while chunk := pipe.read(65536):
            if len(buffer) < limits.output_bytes:
                buffer += chunk[: limits.output_bytes - len(buffer)]
            else:
                overflow.set()
                _kill(proc)
                break

    readers = [threading.Thread(target=drain, args=(n, getattr(proc, n)), daemon=True) for n in streams]
    for reader in readers:
        reader.start()
    try:
        proc.stdin.write(stdin)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    timed_out = False
    try:
        proc.wait(timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
        proc.wait()
    for reader in readers:
        reader.join(timeout=5)
    if cgroup is not None:
        cgroup.remove()
    return SandboxResult(
        returncode=proc.returncode,
        stdout=bytes(streams["stdout"]),
        stderr=bytes(streams["stderr"]),
        seconds=time.perf_counter() - start,
        timed_out=timed_out,
        output_overflow=overflow.is_set(),
        notes=notes,
    )


def _kill(proc: subprocess.Popen) -> None:
    """Kill bwrap's whole process group; the sandbox's pid namespace dies with its pid 1."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
