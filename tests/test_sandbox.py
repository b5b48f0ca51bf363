"""The sandbox that student code runs in: what it cannot see, reach or exhaust.

Each test runs real code in a real bubblewrap sandbox. Without bubblewrap they are skipped, with
the reason (`.ci/run` installs it, so CI runs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from transformer_course.grading import sandbox
from transformer_course.grading.sandbox import GiB, Limits, run_sandboxed, sandbox_problem

pytestmark = pytest.mark.skipif(bool(sandbox_problem()), reason=f"no sandbox here: {sandbox_problem()}")

PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")
REPO = Path(__file__).resolve().parents[1]
QUICK = Limits(wall_seconds=10, cpu_seconds=10, memory_bytes=1 * GiB)


def python(tmp_path: Path, code: str, limits: Limits = QUICK, args: tuple[str, ...] = (), **kwargs):
    (tmp_path / "main.py").write_text(code, encoding="utf-8")
    return run_sandboxed([PYTHON, "main.py", *args], tmp_path, limits=limits, **kwargs)


def test_plain_code_runs_and_its_output_comes_back(tmp_path):
    result = python(tmp_path, "print(6 * 7)\nopen('out.txt', 'w').write('kept')\n")
    assert result.returncode == 0 and result.stdout == b"42\n" and result.ended_by is None
    assert (tmp_path / "out.txt").read_text() == "kept"  # its own folder is writable


def test_no_network(tmp_path):
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 80), timeout=3)\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print('refused', e.errno)\n"
    )
    result = python(tmp_path, code)
    assert result.stdout.startswith(b"refused"), result.stdout + result.stderr


def test_the_course_and_other_folders_are_invisible(tmp_path):
    other = tmp_path.parent / f"other-student-{uuid.uuid4().hex}"
    other.mkdir()
    (other / "answers.ipynb").write_text("secret")
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import os\n"
        f"for path in [{str(REPO)!r}, {str(other)!r}, '/home', {str(REPO / 'solutions')!r}]:\n"
        "    print(path, os.path.exists(path))\n"
        "# /root shows only where Python itself lives when it is installed there (pyenv)\n"
        "print('/root holds', os.listdir('/root') if os.path.exists('/root') else [])\n"
    )
    result = python(work, code)
    assert result.returncode == 0, result.stderr
    assert b"True" not in result.stdout, result.stdout
    assert result.stdout.splitlines()[-1] in (b"/root holds []", b"/root holds ['.pyenv']")


@pytest.mark.parametrize("path", ["/usr/evil.txt", "/etc/evil.txt", "/submission/../evil.txt"])
def test_nothing_outside_its_folder_is_writable(tmp_path, path):
    result = python(tmp_path, f"open({path!r}, 'w').write('x')\n")
    assert result.returncode != 0 and (b"Read-only" in result.stderr or b"Permission" in result.stderr
                                       or b"No such file" in result.stderr), result.stderr
    assert not Path(path).exists()


def test_an_infinite_loop_is_stopped_by_the_wall_clock(tmp_path):
    start = time.perf_counter()
    result = python(tmp_path, "while True:\n    pass\n", Limits(wall_seconds=2, cpu_seconds=60))
    assert result.timed_out and "ran out of time" in result.ended_by
    assert time.perf_counter() - start < 10


def test_a_loop_that_ignores_sigint_is_stopped_too(tmp_path):
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.1)\n"
    result = python(tmp_path, code, Limits(wall_seconds=2))
    assert result.timed_out


def test_cpu_time_is_limited(tmp_path):
    result = python(tmp_path, "while True:\n    pass\n", Limits(wall_seconds=30, cpu_seconds=1))
    assert not result.timed_out and "CPU time" in result.ended_by


def test_a_huge_allocation_fails_inside_the_sandbox(tmp_path):
    code = "try:\n    x = bytearray(10 * 1024**3)\nexcept MemoryError:\n    print('MemoryError')\n"
    result = python(tmp_path, code)
    assert result.stdout == b"MemoryError\n", result.stderr


def test_flooding_the_output_costs_nothing_but_the_output(tmp_path):
    """Output beyond the cap is read and dropped: the program runs to its end."""
    result = python(tmp_path, "import sys\nfor _ in range(50):\n    sys.stdout.write('x' * 1024**2)\nprint('end')\n",
                    Limits(wall_seconds=30, output_bytes=100_000))
    assert result.returncode == 0 and result.ended_by is None
    assert result.output_overflow and len(result.stdout) == 100_000


MEMORY_MODES = [pytest.param(True, id="cgroup"), pytest.param(False, id="watchdog")]


@pytest.fixture(params=MEMORY_MODES)
def memory_mode(request, monkeypatch):
    """Each memory limit is shown twice: held by a cgroup (where the grader may make one: root,
    here) and by the watchdog an ordinary user gets instead."""
    return _held_by("memory", request.param, monkeypatch)


def _held_by(controller: str, cgroup: bool, monkeypatch) -> bool:
    """Have the sandbox hold ``controller``'s limit with a cgroup (skip where none can be made), or
    with the watchdog (no cgroup made at all)."""
    if cgroup:
        cgroups = sandbox.SubmissionCgroups(GiB, 64)
        available = getattr(cgroups, controller)
        cgroups.remove()
        if not available:
            pytest.skip(f"no {controller} cgroup can be made here")
    else:
        monkeypatch.setattr(sandbox, "_cgroup_places", lambda: {})
    return cgroup


def test_the_memory_limit_holds_for_all_processes_together(tmp_path, memory_mode):
    """Three processes of 450 MB each under a 1 GiB limit (each alone is allowed): not all three
    may live at once."""
    code = (
        "import os, time\n"
        "children = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        hoard = bytearray(450 * 1024**2)\n"
        "        for i in range(0, len(hoard), 4096):\n"
        "            hoard[i] = 1\n"
        "        time.sleep(4)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "print(sorted(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children))\n"
    )
    limits = Limits(wall_seconds=40, cpu_seconds=30, memory_bytes=1 * GiB, address_space_bytes=2 * GiB)
    result = python(tmp_path, code, limits)
    codes = eval(result.stdout.decode() or "[]")  # noqa: S307 - our own printout
    assert codes and codes.count(0) < 3 and -9 in codes, (codes, result.stderr[-500:])


def test_tmp_counts_towards_the_memory_limit(tmp_path, memory_mode):
    """/tmp lives in memory: 700 MB there and 500 MB in a process pass a 1 GiB limit."""
    code = (
        "import time\n"
        "with open('/tmp/big', 'wb') as f:\n"
        "    for _ in range(700):\n"
        "        f.write(b'x' * 1024**2)\n"
        "print('wrote /tmp', flush=True)\n"
        "hoard = bytearray(500 * 1024**2)\n"
        "for i in range(0, len(hoard), 4096):\n"
        "    hoard[i] = 1\n"
        "time.sleep(3)\n"
        "print('survived')\n"
    )
    limits = Limits(wall_seconds=40, cpu_seconds=30, memory_bytes=1 * GiB, tmp_bytes=1 * GiB,
                    file_bytes=1 * GiB, address_space_bytes=2 * GiB)
    result = python(tmp_path, code, limits)
    assert b"wrote /tmp" in result.stdout and b"survived" not in result.stdout, result.stderr[-500:]
    assert result.ended_by and "killed" in result.ended_by


def test_tmp_has_a_size_limit(tmp_path):
    code = (
        "try:\n"
        "    with open('/tmp/big', 'wb') as f:\n"
        "        for _ in range(200):\n"
        "            f.write(b'x' * 1024**2)\n"
        "    print('wrote it all')\n"
        "except OSError as e:\n"
        "    print('full', e.errno)\n"
    )
    result = python(tmp_path, code, Limits(wall_seconds=20, tmp_bytes=64 * 1024**2, file_bytes=1 * GiB))
    assert result.stdout.startswith(b"full 28"), result.stdout + result.stderr  # ENOSPC


def test_the_limits_in_force_are_said_in_words():
    words = " ".join(sandbox.limits_in_force())
    assert "memory:" in words and "processes:" in words and "cpu:" in words
    assert ("a cgroup holds" in words) or ("watchdog" in words)


@pytest.fixture(params=MEMORY_MODES)
def cpu_mode(request, monkeypatch):
    return _held_by("cpu", request.param, monkeypatch)


def test_a_submission_keeps_at_most_its_cpus_busy(tmp_path, cpu_mode):
    """Three spinning processes (in sessions of their own) against a limit of a quarter core (a
    low limit, so that a machine busy with other work still shows the excess): a cgroup holds them
    to it in all, the watchdog stops them. Either way a classmate graded beside keeps the rest."""
    code = (
        "import os, time, resource\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        end = time.time() + 4\n"
        "        while time.time() < end:\n"
        "            pass\n"
        "        os._exit(0)\n"
        "statuses = [os.waitstatus_to_exitcode(os.wait()[1]) for _ in range(3)]\n"
        "used = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(used.ru_utime + used.ru_stime, statuses)\n"
    )
    result = python(tmp_path, code, Limits(wall_seconds=30, cpu_seconds=30, cpus=0.25))
    seconds, statuses = result.stdout.decode().split(" ", 1)
    if cpu_mode:  # 4 s of wall clock on a quarter core: about 1 s of CPU in all, not 12
        assert float(seconds) < 6.5, result.stdout
    else:  # the busiest spinners were stopped
        assert "-9" in statuses and result.cpu_exceeded, result.stdout


def test_short_lived_processes_do_not_slip_past_the_cpu_limit(tmp_path, cpu_mode):
    """A manager starting spinners that live 0.7 s each, a few at a time (found by the second
    round of the attack: the watchdog counted a process only from its second reading)."""
    code = (
        "import os, time\n"
        "manager = os.fork()\n"
        "if manager == 0:\n"
        "    os.setsid()\n"
        "    while True:\n"
        "        for _ in range(4):\n"
        "            if os.fork() == 0:\n"
        "                end = time.time() + 0.7\n"
        "                while time.time() < end:\n"
        "                    pass\n"
        "                os._exit(0)\n"
        "        time.sleep(0.35)\n"
        "        try:\n"
        "            while os.waitpid(-1, os.WNOHANG)[0]:\n"
        "                pass\n"
        "        except ChildProcessError:\n"
        "            pass\n"
        "time.sleep(5)\n"
        "ended, status = os.waitpid(manager, os.WNOHANG)\n"
        "print('manager', 'killed' if ended else 'alive', os.times().elapsed)\n"
    )
    result = python(tmp_path, code, Limits(wall_seconds=30, cpu_seconds=30, cpus=0.25))
    if cpu_mode:
        assert result.stdout.startswith(b"manager alive"), result.stdout + result.stderr
    else:
        assert result.stdout.startswith(b"manager killed") and result.cpu_exceeded, result.stdout + result.stderr


def test_memory_files_count_towards_the_memory_limit(tmp_path, memory_mode):
    """Pages of a memfd (os.memfd_create) live in memory, in no process's resident size (found by
    the second round of the attack)."""
    code = (
        "import os, time\n"
        "files = []\n"
        "for _ in range(12):\n"
        "    fd = os.memfd_create('hoard')\n"
        "    for _ in range(100):\n"
        "        os.write(fd, b'x' * 1024**2)\n"
        "    files.append(fd)\n"
        "time.sleep(2)\n"
        "print('survived')\n"
    )
    limits = Limits(wall_seconds=30, cpu_seconds=30, memory_bytes=1 * GiB, file_bytes=1 * GiB)
    result = python(tmp_path, code, limits)
    assert b"survived" not in result.stdout, result.stdout + result.stderr


def test_a_private_memory_folder_replaces_the_disk(tmp_path):
    """Without a folder of the caller's, /submission lives in memory and has a size."""
    code = (
        "import os\n"
        "try:\n"
        "    with open('big', 'wb') as f:\n"
        "        for _ in range(200):\n"
        "            f.write(b'x' * 1024**2)\n"
        "except OSError as e:\n"
        "    print('full', e.errno, os.getcwd())\n"
    )
    result = run_sandboxed([PYTHON, "-c", code], None, limits=Limits(wall_seconds=20, tmp_bytes=64 * 1024**2,
                                                                       file_bytes=1 * GiB))
    assert result.stdout == b"full 28 /submission\n", result.stdout + result.stderr


def test_devices_are_read_only_and_shared_memory_is_limited(tmp_path):
    code = (
        "import os\n"
        "for path in ('/dev/left-behind', '/dev/shm/big'):\n"
        "    try:\n"
        "        with open(path, 'wb') as f:\n"
        "            for _ in range(200):\n"
        "                f.write(b'x' * 1024**2)\n"
        "        print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print('refused', path, e.errno)\n"
    )
    result = python(tmp_path, code, Limits(wall_seconds=20, tmp_bytes=64 * 1024**2, file_bytes=1 * GiB))
    assert result.stdout == b"refused /dev/left-behind 30\nrefused /dev/shm/big 28\n", result.stdout + result.stderr


def test_files_only_their_owner_may_read_are_hidden(tmp_path):
    """Run as root, the sandbox is root too: /etc/shadow would be readable. It is masked, like
    every file under /etc that not every user may read."""
    code = ("try:\n    print(repr(open('/etc/shadow').read()))\n"
            "except FileNotFoundError:\n    print('none')\nexcept PermissionError:\n    print('denied')\n")
    result = python(tmp_path, code)
    assert result.stdout in (b"''\n", b"none\n", b"denied\n"), result.stdout + result.stderr


def test_open_files_are_limited(tmp_path):
    code = (
        "import socket\n"
        "pairs = []\n"
        "try:\n"
        "    for _ in range(1000):\n"
        "        pairs.append(socket.socketpair())\n"
        "except OSError as e:\n"
        "    print('stopped at', len(pairs), e.errno)\n"
    )
    result = python(tmp_path, code, Limits(wall_seconds=20, open_files=64))
    assert result.stdout.startswith(b"stopped at 3"), result.stdout + result.stderr  # 64 fds: ~30 pairs


def test_passed_files_are_the_only_way_out(tmp_path):
    """A file of the grader's, passed by descriptor, can be written; its path cannot be seen."""
    secret = tmp_path / "outside" / "result.bin"
    secret.parent.mkdir()
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    work = tmp_path / "work"
    work.mkdir()
    try:
        code = (f"import os\nos.write({fd}, b'through the descriptor')\n"
                f"print(os.path.exists({str(secret)!r}))\n")
        result = python(work, code, pass_fds=[fd])
    finally:
        os.close(fd)
    assert result.stdout == b"False\n", result.stderr
    assert secret.read_bytes() == b"through the descriptor"


def test_hidden_folders_look_empty(tmp_path):
    shared = tmp_path / "site"
    (shared / "transformer_course").mkdir(parents=True)
    (shared / "transformer_course" / "attention.py").write_text("ANSWER = 42\n")
    work = tmp_path / "work"
    work.mkdir()
    code = f"import os\nprint(os.listdir({str(shared / 'transformer_course')!r}))\n"
    result = python(work, code, read_only=[shared], hide=[shared / "transformer_course"])
    assert result.stdout == b"[]\n", result.stderr


def test_os_exit_is_reported_as_an_exit_code(tmp_path):
    result = python(tmp_path, "import os\nos._exit(3)\n")
    assert result.returncode == 3 and result.ended_by is None


def _leftover(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def test_no_process_outlives_the_sandbox(tmp_path):
    marker = f"sleep {1000 + os.getpid() % 1000}.{uuid.uuid4().int % 1000}"
    code = (
        "import subprocess, os\n"
        f"subprocess.Popen({marker.split()!r}, start_new_session=True)\n"
        f"if os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', {marker.split()!r})\n"
        "print('started')\n"
    )
    result = python(tmp_path, code)
    assert result.stdout == b"started\n", result.stderr
    time.sleep(0.5)
    assert _leftover(marker) == []


def test_a_fork_bomb_is_contained(tmp_path):
    code = (
        "import os, time\n"
        "children = 0\n"
        "for _ in range(100000):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "    except OSError:\n"
        "        break\n"
        "print('children', children)\n"
    )
    marker = f"fork-bomb-{uuid.uuid4().hex}"
    result = python(tmp_path, code, Limits(wall_seconds=15, processes=32), args=(marker,))
    assert result.stdout.startswith(b"children"), result.stderr
    assert int(result.stdout.split()[1]) <= 32
    time.sleep(0.5)
    assert _leftover(marker) == []  # the 30-second sleepers were ended with the sandbox


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("runuser") is None, reason="needs root to switch user")
def test_an_ordinary_user_can_create_the_sandbox():
    """Instructors are not root: bubblewrap must work through unprivileged user namespaces."""
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", "bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
         "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--unshare-all",
         "--die-with-parent", "--proc", "/proc", "--dev", "/dev", "--", "/usr/bin/id", "-u"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != "0"


def test_read_only_folders_are_visible_but_not_writable_even_under_tmp(tmp_path):
    """A course (and its virtual environment) cloned under /tmp: the sandbox's own /tmp must not
    hide it."""
    shared = tmp_path / "venv-like"
    shared.mkdir()
    (shared / "module.py").write_text("VALUE = 42\n")
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(shared)!r})\n"
        "import module\n"
        "print(module.VALUE)\n"
        "try:\n"
        f"    open({str(shared / 'evil.py')!r}, 'w')\n"
        "except OSError:\n"
        "    print('read-only')\n"
    )
    result = python(work, code, read_only=[shared])
    assert str(tmp_path).startswith("/tmp")
    assert result.stdout == b"42\nread-only\n", result.stderr


def test_system_v_shared_memory_is_refused(tmp_path):
    """Its memory belongs to no process, so a watchdog could not count it (third round of the attack:
    6 GiB held past a 4 GiB limit); nothing in the course needs it. Other system calls go on."""
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.shmget(0, 1 << 20, 0o1600), libc.msgget(0, 0o1600), libc.semget(0, 1, 0o1600))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(7)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), len(os.listdir('/proc/self/fd')) > 0)\n"
    )
    result = python(tmp_path, code)
    assert result.stdout == b"-1 -1 -1\n7 True\n", result.stdout + result.stderr
