"""Running untrusted code in a disposable sandbox: bubblewrap plus resource limits.

One call of :func:`run_sandboxed` runs one command (a student's notebook, via the probe) with:

* **no network** and private process, IPC, UTS and user namespaces (``bwrap --unshare-all``);
* **a read-only system**: only the operating system, the Python installation and the packages
  the command needs are mounted, read-only; nothing else of the machine exists inside (not the
  course repository, not the gradebook, not other students' files);
* **one writable folder**, the submission's private working folder, mounted at ``/submission``, and a
  private empty ``/tmp`` of limited size;
* **limits for the whole submission**, over all its processes together (:class:`Limits`): memory,
  its ``/tmp`` included, and the number of processes, held by cgroups where the machine lets the
  grader make them (:class:`SubmissionCgroups`), else by a watchdog and per-process limits (see
  :func:`limits_in_force`); per process, CPU time and the size of a file;
* **a wall-clock kill** that ends every process the command started: the command is pid 1 of its
  own pid namespace, and when it dies the kernel ends everything else inside;
* **output kept up to a cap**: what is printed beyond it is read and dropped, with a note, and costs
  the command nothing.

bubblewrap works for ordinary users through unprivileged user namespaces; :func:`sandbox_problem`
says, in words, why it cannot be used on a machine where it is missing or not permitted.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import struct
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

    memory_bytes: int = 4 * GiB  # all its processes together, its /tmp included
    tmp_bytes: int = 1 * GiB  # the size of its /tmp (and counted in memory_bytes)
    cpu_seconds: int = 120  # CPU time of one process, all its threads together
    cpus: float = 1.0  # CPU cores all its processes together may keep busy (so classmates keep theirs)
    open_files: int = 256  # per process (sockets included: their buffers are memory no one counts)
    wall_seconds: float = 180.0  # real time, then everything inside is killed
    processes: int = 64  # processes and threads the command may add
    # Largest file it may write: its result files too, which the grader reads up to 16 MiB
    # (hardened.MAX_RESULT_BYTES), so a submission's results take at most this per exercise on disk.
    file_bytes: int = 17 * MiB
    output_bytes: int = 2 * MiB  # stdout and stderr each; beyond that, output is dropped
    # Address space of one process: a cap the kernel applies at once, where the total above is
    # watched; torch alone maps about 1 GiB on import.
    address_space_bytes: int = 4 * GiB


@dataclass
class SandboxResult:
    """How a sandboxed run ended."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool = False
    output_overflow: bool = False  # more than output_bytes was printed; the rest was dropped
    memory_exceeded: bool = False  # the watchdog killed a process for the submission's memory
    cpu_exceeded: bool = False  # the watchdog killed a process for the submission's CPU use
    notes: list[str] = field(default_factory=list)

    @property
    def ended_by(self) -> str | None:
        """Why the run was stopped or died, in words; None when it exited by itself, cleanly or not."""
        if self.timed_out:
            return "it ran out of time and was stopped"
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
                "SIGKILL": "it was killed: it used more memory than allowed" if self.memory_exceeded else
                "it was killed: it kept more CPU cores busy than allowed" if self.cpu_exceeded else
                "it was killed (usually: it used more memory or CPU time than allowed)",
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
    """bwrap arguments mounting the operating system and Python read-only, and nothing else; of
    /etc only what every user of the machine may read."""
    args: list[str] = []
    for path in ("/usr", "/etc", "/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for private in _private_files("/etc"):
        if private.is_dir():
            args += ["--tmpfs", str(private), "--remount-ro", str(private)]
        else:
            args += ["--ro-bind", "/dev/null", str(private)]
    python_homes = {Path(sys.base_prefix).resolve(), Path(sys.base_exec_prefix).resolve()}
    for path in (*sorted(python_homes), *extra_read_only):
        path = Path(path).resolve()
        if not str(path).startswith(("/usr/", "/lib")):
            args += ["--ro-bind", str(path), str(path)]
    return args


_PRIVATE: dict[str, list[Path]] = {}


def _private_files(folder: str) -> list[Path]:
    """Files and folders under ``folder`` that not every user may read (/etc/shadow, private keys).
    Inside the sandbox a grader run as root is root too, the owner of those files, so they are
    masked: the sandbox sees what an ordinary user would."""
    if folder not in _PRIVATE:
        found = []
        for root, dirs, files in os.walk(folder):
            for name in list(dirs):
                path = Path(root, name)
                try:
                    mode = path.lstat().st_mode
                except OSError:
                    continue
                if stat.S_ISDIR(mode) and mode & 0o005 != 0o005:
                    found.append(path)
                    dirs.remove(name)  # masked whole
            for name in files:
                path = Path(root, name)
                try:
                    mode = path.lstat().st_mode
                except OSError:
                    continue
                if stat.S_ISREG(mode) and not mode & 0o004:
                    found.append(path)
        _PRIVATE[folder] = found
    return _PRIVATE[folder]


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


def _cgroup_places() -> dict[str, list[Path]]:
    """Where a cgroup for each controller could be made: {controller: [folders]}.

    cgroup v1 mounts one hierarchy per controller (``/sys/fs/cgroup/memory``...), v2 one for all
    (``/sys/fs/cgroup``); a new cgroup goes below the one this process is in, or below the
    hierarchy's root (which root may use).
    """
    mounts: dict[str, Path] = {}
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            separator = fields.index("-")
            fstype, options = fields[separator + 1], fields[separator + 3].split(",")
            if fstype == "cgroup2":
                mounts.setdefault("", Path(fields[4]))
            elif fstype == "cgroup":
                for controller in ("memory", "pids", "cpu"):
                    if controller in options:
                        mounts.setdefault(controller, Path(fields[4]))
    except (OSError, ValueError, IndexError):
        return {}
    own: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    except (OSError, ValueError):
        pass
    places: dict[str, list[Path]] = {"memory": [], "pids": [], "cpu": []}
    for controller in ("memory", "pids", "cpu"):
        for key in (controller, ""):  # its v1 hierarchy first, then v2
            if key in mounts:
                root = mounts[key]
                mine = root / own.get(key, "/").lstrip("/")
                places[controller] += [p for p in dict.fromkeys([mine, root]) if p.is_dir()]
    return places


class SubmissionCgroups:
    """cgroups that hold every process of one sandbox: its memory (the pages of its ``/tmp``
    are charged to it too) and its number of processes, whoever started them. Made where this
    user may make them (root, or a delegated cgroup v2 subtree); elsewhere ``memory`` or
    ``pids`` stays False and the sandbox falls back (see :func:`limits_in_force`). Removing them
    at the end ends whatever is left inside."""

    def __init__(self, memory_bytes: int, max_tasks: int, cpus: float = 1.0) -> None:
        self.folders: list[Path] = []
        self.memory = self.pids = self.cpu = False
        name = f"transformer-course-{os.getpid()}-{time.monotonic_ns()}"
        for controller, places in _cgroup_places().items():
            for place in places:
                folder = place / name
                if folder in self.folders:  # v2: one folder holds both controllers
                    made = True
                else:
                    made = _make_cgroup(folder)
                if not made:
                    continue
                if controller == "memory" and _limit_memory(folder, memory_bytes):
                    self.memory = True
                elif controller == "pids" and _write(folder / "pids.max", str(max_tasks)):
                    self.pids = True
                elif controller == "cpu" and _limit_cpu(folder, cpus):
                    self.cpu = True
                else:
                    if folder not in self.folders:
                        _remove_cgroup(folder)
                    continue
                if folder not in self.folders:
                    self.folders.append(folder)
                break

    def join(self) -> None:  # in the child, before exec
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    def processes(self) -> list[int]:
        found: set[int] = set()
        for folder in self.folders:
            try:
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return sorted(found)

    def remove(self) -> None:
        """Kill whatever is left inside, wait until it is gone, and remove the cgroups."""
        for _ in range(250):
            pids = self.processes()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        for folder in self.folders:
            _remove_cgroup(folder)


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _make_cgroup(folder: Path) -> bool:
    try:
        folder.mkdir()
        return True
    except OSError:
        return False


def _remove_cgroup(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _limit_memory(folder: Path, memory_bytes: int) -> bool:
    if (folder / "memory.max").exists():  # v2: no swap either, so the limit is the limit
        return _write(folder / "memory.max", str(memory_bytes)) and (
            not (folder / "memory.swap.max").exists() or _write(folder / "memory.swap.max", "0"))
    if (folder / "memory.limit_in_bytes").exists():  # v1
        ok = _write(folder / "memory.limit_in_bytes", str(memory_bytes))
        if (folder / "memory.memsw.limit_in_bytes").exists():
            _write(folder / "memory.memsw.limit_in_bytes", str(memory_bytes))
        return ok
    return False


def _limit_cpu(folder: Path, cpus: float) -> bool:
    period = 100_000  # microseconds
    quota = max(1_000, int(cpus * period))
    if (folder / "cpu.max").exists():  # v2
        return _write(folder / "cpu.max", f"{quota} {period}")
    if (folder / "cpu.cfs_quota_us").exists():  # v1
        return _write(folder / "cpu.cfs_period_us", str(period)) and _write(folder / "cpu.cfs_quota_us", str(quota))
    return False


def limits_in_force(cgroups: SubmissionCgroups | None = None) -> list[str]:
    """How the limits of a submission hold on this machine, in words (for the instructor)."""
    cgroups = cgroups or SubmissionCgroups(GiB, 64)
    try:
        memory = ("memory: a cgroup holds all the submission's processes and its in-memory folders "
                  "(/tmp, /submission, /dev/shm) under the limit" if cgroups.memory else
                  "memory: no cgroup can be made here, so a watchdog adds up the memory of all the "
                  "submission's processes and its in-memory folders (/tmp, /submission, /dev/shm) ten times "
                  "a second and stops the largest process past the limit; each process is also capped at "
                  "once by its address space. Memory the kernel holds for it (socket buffers, say) is not "
                  "counted: run as root, or with a delegated cgroup, for a hard limit")
        processes = ("processes: a cgroup caps the number of processes" if cgroups.pids else
                     "processes: capped by RLIMIT_NPROC inside the sandbox's user namespace" if os.getuid() != 0
                     else "processes: NOT capped (running as root without a pids cgroup)")
        cpu = ("cpu: a cgroup caps the cores all the submission's processes keep busy" if cgroups.cpu else
               "cpu: no cgroup can be made here, so the watchdog stops the submission's extra processes when "
               "together they keep more cores busy than allowed")
    finally:
        if cgroups is not None:
            cgroups.remove()
    return [memory, processes, cpu]


class Watchdog(threading.Thread):
    """Where no cgroup can hold a limit: every ``interval`` seconds, look at every process in the
    sandbox's pid namespace.

    ``memory``: add up their resident memory, the memory files they hold open (``memfd``) and what
    the sandbox's in-memory folders hold, and kill the largest process past the limit.
    ``cpus``: add up the CPU time of every process, those that ended and were collected included
    (a process's children's time moves to it when they end), and when the sandbox kept more cores
    busy than that over the last second, kill every process but its first two (bubblewrap's and the
    command's): short-lived processes started one after the other cannot slip through.
    """

    def __init__(self, outer_pid: int, workdir: Path | None, *, memory: int | None, cpus: float | None,
                 interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.outer_pid, self.memory, self.cpus, self.interval = outer_pid, memory, cpus, interval
        self._disk = os.statvfs(workdir).f_fsid if workdir is not None else None
        self.stopped = threading.Event()
        self.killed = False  # for memory
        self.killed_for_cpu = False
        self._cpu: list[tuple[float, int]] = []  # (when, CPU ticks of the whole sandbox) over the last second

    def _namespace(self) -> tuple[str | None, int | None]:
        """The sandbox's pid namespace (that of bubblewrap's child), and its pid 1 as seen here."""
        try:
            children = Path(f"/proc/{self.outer_pid}/task/{self.outer_pid}/children").read_text().split()
            inner = int(children[0])
            return os.readlink(f"/proc/{inner}/ns/pid"), inner
        except (OSError, IndexError, ValueError):
            return None, None

    def run(self) -> None:
        namespace, init = None, None
        while not self.stopped.wait(self.interval):
            if namespace is None:
                namespace, init = self._namespace()
                continue
            processes = [p for p in _processes() if _namespace_of(p) == namespace]
            if self.cpus is not None:
                self._check_cpu(processes)
            if self.memory is not None:
                self._check_memory(processes, init)

    def _check_memory(self, processes: list[int], init: int | None) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        sizes, memory_files = {}, {}
        for pid in processes:
            try:
                with open(f"/proc/{pid}/statm") as f:
                    sizes[pid] = int(f.read().split()[1]) * page
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:"):
                        info = os.stat(f"/proc/{pid}/fd/{fd}")
                        memory_files[(info.st_dev, info.st_ino)] = info.st_size
            except (OSError, ValueError, IndexError):
                continue
        used = sum(memory_files.values())
        for folder in ("tmp", "dev/shm", INSIDE.lstrip("/")):  # the folders that live in memory
            try:
                fs = os.statvfs(f"/proc/{init}/root/{folder}")
                if fs.f_fsid != self._disk:  # a tmpfs of the sandbox's, not the bound folder
                    used += (fs.f_blocks - fs.f_bfree) * fs.f_frsize
            except OSError:
                continue
        if sizes and sum(sizes.values()) + used > self.memory:
            largest = max(sizes, key=sizes.get)
            try:
                os.kill(largest, signal.SIGKILL)
                self.killed = True
            except ProcessLookupError:
                pass

    def _check_cpu(self, processes: list[int]) -> None:
        ticks, inner = 0, {}
        for pid in processes:
            try:
                with open(f"/proc/{pid}/stat") as f:  # utime, stime, cutime, cstime: after the name
                    fields = f.read().rsplit(")", 1)[1].split()
                ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))
                inner[pid] = _inner_pid(pid)
            except (OSError, ValueError, IndexError):
                continue
        now = time.monotonic()
        self._cpu.append((now, ticks))
        while len(self._cpu) > 1 and now - self._cpu[0][0] > 1.0:
            self._cpu.pop(0)
        then, before = self._cpu[0]
        if now - then < 0.9:
            return
        cores = (ticks - before) / (os.sysconf("SC_CLK_TCK") * (now - then))
        if cores > self.cpus * 1.25:  # (a little slack: the readings are not instant)
            for pid, number in inner.items():
                if number not in (1, 2):  # bubblewrap's own process and the command go on
                    try:
                        os.kill(pid, signal.SIGKILL)
                        self.killed_for_cpu = True
                    except ProcessLookupError:
                        pass
            self._cpu.clear()


def _processes() -> list[int]:
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def _namespace_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _inner_pid(pid: int) -> int | None:
    """The process's number inside its own pid namespace (the last of the NSpid line)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


# A seccomp filter (classic BPF, as bubblewrap's --seccomp takes it) refusing System V shared memory,
# message queues and semaphores: no course code needs them, and their memory is in no process, so a
# watchdog without cgroups could not count it (third round of the attack: 6 GiB held past a 4 GiB
# limit). Other architectures than these two are let through unfiltered.
_SYSV_IPC = {0xC000003E: (29, 68, 64), 0xC00000B7: (194, 186, 190)}  # x86-64, aarch64: shmget, msgget, semget


def _seccomp_program() -> bytes | None:
    machine = os.uname().machine
    arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(machine)
    if arch is None:
        return None
    load, jump_eq, jump_ge, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    calls = _SYSV_IPC[arch]
    program = [(load, 0, 0, 4),  # the architecture
               (jump_eq, 0, 2 + len(calls), arch),  # another one: allow
               (load, 0, 0, 0),  # the system call's number
               (jump_ge, 1 + len(calls), 0, 0x40000000 if arch == 0xC000003E else 0xFFFFFFFF)]  # x32: deny
    for index, number in enumerate(calls):
        program.append((jump_eq, len(calls) - index, 0, number))
    program += [(ret, 0, 0, allow), (ret, 0, 0, deny)]
    return b"".join(struct.pack("<HBBI", *instruction) for instruction in program)


def _limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value if hard == resource.RLIM_INFINITY else hard))


def run_sandboxed(
    argv: Sequence[str],
    workdir: Path | None,
    *,
    limits: Limits = Limits(),
    read_only: Sequence[Path] = (),
    hide: Sequence[Path] = (),
    env: dict[str, str] | None = None,
    stdin: bytes = b"",
    pass_fds: Sequence[int] = (),
) -> SandboxResult:
    """Run ``argv`` in a fresh sandbox whose only writable folders are ``/submission`` and ``/tmp``.

    ``/submission`` is ``workdir`` (a folder of the caller's, to pass files in and out), or, when
    ``workdir`` is None, a private folder in memory, of ``limits.tmp_bytes`` like ``/tmp``: then
    nothing the command writes reaches the machine's disk, and it all counts as its memory.

    ``read_only`` lists more host folders to mount read-only at the same path (a virtual
    environment's packages, say); ``hide`` folders inside those that must look empty (an installed
    copy of the course). ``pass_fds`` are open files of the caller the command may use (and no other).
    The environment is empty apart from ``env``, ``HOME=/submission`` and a plain ``PATH``.
    Returns once every process of the sandbox has ended. Raises RuntimeError when the sandbox
    cannot run (see sandbox_problem).
    """
    problem = sandbox_problem()
    if problem:
        raise RuntimeError(problem)
    environment = {"HOME": INSIDE, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                   "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    # /tmp first: the read-only folders may lie under /tmp (a course cloned there), and a
    # tmpfs mounted after them would hide them.
    command = [bwrap_path(), "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp", *_system_binds(read_only)]
    for folder in hide:
        if Path(folder).is_dir():
            command += ["--tmpfs", str(Path(folder).resolve())]
    command += [
        "--unshare-all",  # no network, own pid/ipc/uts/cgroup namespaces
        "--unshare-user",  # and a user namespace even when started by root: no capabilities,
        "--cap-drop", "ALL",  # so the process limit below holds for root too
        "--disable-userns",  # and no further user namespaces inside, which would give some back
        "--die-with-parent",  # if the grader dies, so does the sandbox
        "--new-session",  # no access to the grader's terminal
        "--dev", "/dev", "--remount-ro", "/dev",  # the devices, and nothing written among them
        "--size", str(limits.tmp_bytes), "--tmpfs", "/dev/shm",
        "--proc", "/proc",
        *(["--bind", str(workdir.resolve()), INSIDE] if workdir is not None
          else ["--size", str(limits.tmp_bytes), "--tmpfs", INSIDE]),
        "--chdir", INSIDE,
        "--remount-ro", "/",  # the sandbox's own root folder is read-only too
        "--clearenv",
    ]
    for key, value in environment.items():
        command += ["--setenv", key, value]
    program = _seccomp_program()
    seccomp_read = None
    if program is not None:
        seccomp_read, seccomp_write = os.pipe()
        os.write(seccomp_write, program)  # (a few dozen bytes: the pipe holds them)
        os.close(seccomp_write)
        command += ["--seccomp", str(seccomp_read)]
    # The process limit, set inside the sandbox's own user namespace, where the kernel counts the
    # sandbox's processes alone. (Set outside, it would count every process of the user: one
    # sandbox could use up what another had left.) Root is not held by it at all: a pids cgroup is.
    inside = shutil.which("prlimit") if os.getuid() != 0 else None
    if inside:
        command += ["--", inside, f"--nproc={limits.processes + 2}:{limits.processes + 2}", "--", *argv]
    else:
        command += ["--", *argv]

    processes = None if inside else _count_own_processes() + limits.processes
    cgroups = SubmissionCgroups(limits.memory_bytes, limits.processes, limits.cpus)
    notes = []
    if os.getuid() == 0 and not cgroups.pids:
        notes.append("running as root without a pids cgroup: the number of processes is not limited")

    def apply_limits() -> None:  # runs in the child, before bwrap starts
        cgroups.join()
        _limit(resource.RLIMIT_AS, limits.address_space_bytes)
        _limit(resource.RLIMIT_CPU, limits.cpu_seconds)
        _limit(resource.RLIMIT_FSIZE, limits.file_bytes)
        if processes is not None:
            _limit(resource.RLIMIT_NPROC, processes)
        _limit(resource.RLIMIT_CORE, 0)
        _limit(resource.RLIMIT_NOFILE, limits.open_files)

    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=apply_limits, start_new_session=True,
            pass_fds=(*pass_fds, *([seccomp_read] if seccomp_read is not None else [])),
        )
    except BaseException:
        cgroups.remove()
        raise
    finally:
        if seccomp_read is not None:
            os.close(seccomp_read)
    watchdog = None
    if not (cgroups.memory and cgroups.cpu):
        watchdog = Watchdog(proc.pid, workdir, memory=None if cgroups.memory else limits.memory_bytes,
                            cpus=None if cgroups.cpu else limits.cpus)
        watchdog.start()
    overflow = threading.Event()
    streams: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def drain(name: str, pipe) -> None:
        """Keep up to output_bytes; read and drop the rest, so the command never blocks on it."""
        buffer = streams[name]
        while chunk := pipe.read(65536):
            kept = chunk[: max(0, limits.output_bytes - len(buffer))]
            buffer += kept
            if len(kept) < len(chunk):
                overflow.set()

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
    if watchdog is not None:
        watchdog.stopped.set()
        watchdog.join()
    cgroups.remove()  # whatever is left inside ends here, before anyone reads what it wrote
    for reader in readers:
        reader.join(timeout=5)
    return SandboxResult(
        returncode=proc.returncode,
        stdout=bytes(streams["stdout"]),
        stderr=bytes(streams["stderr"]),
        seconds=time.perf_counter() - start,
        timed_out=timed_out,
        output_overflow=overflow.is_set(),
        memory_exceeded=bool(watchdog and watchdog.killed),
        cpu_exceeded=bool(watchdog and watchdog.killed_for_cpu),
        notes=notes,
    )


def _kill(proc: subprocess.Popen) -> None:
    """Kill bwrap's whole process group; the sandbox's pid namespace dies with its pid 1."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
