"""A student with no code of their own, who searches everything the grading sandbox can reach.

:func:`answer_cell` is the source of an answer cell that writes nothing of the exercise. When the
grader first calls the function (or builds the class), it searches, in this order:

1. every function and class the garbage collector knows (references substituted for earlier
   exercises, the objects in its inputs, whatever modules are loaded, and their ``__globals__``);
2. the attributes of every module in ``sys.modules``, and every importable course module;
3. every Python file and notebook on the file system it can read (outside the libraries
   themselves), executed to harvest what it defines,

tries each candidate of the right kind and name first, then every other course object, against
the exercise's **visible checks** (the student side of the course is in the sandbox, and may be),
and hands the first one that passes to the grader. It dodges the static look for tampering
(``gc`` reached by computed names) and searches while its cell runs, before any graded call, where
the run-time watch does not look; so what stops it is the trust boundary itself: nothing that
passes is there. (By the time the cells run, the grading process has already loaded the
exercise's inputs and the references it builds on: the search sees them.)
"""

from __future__ import annotations

SEARCH = r'''
import os as _os, sys as _sys, types as _types, signal as _signal, json as _json, time as _time

_course = "transformer" + "_course"  # spelled out, the static look would stop this cell early
_checks = __import__(_course + ".checks", fromlist=["check"])
_collector = __import__("g" + "c")
_every_object = getattr(_collector, "get_" + "objects")
# Kept across the cells (each cell runs this code again, in the same namespace).
_found_answers = globals().get("_found_answers", {})
_definitions = globals().get("_definitions", {})  # name -> files that define it


class _TooSlow(Exception):
    pass


def _limited(seconds, fn, *args):
    def stop(*_):
        raise _TooSlow()
    previous = _signal.signal(_signal.SIGALRM, stop)
    _signal.setitimer(_signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        _signal.signal(_signal.SIGALRM, previous)


_ROOTS = ["/"]
_function = type(_limited)  # types.FunctionType, not named: the static look refuses that name


def _index():
    """Which readable Python files and notebooks define which names (read once per process)."""
    import re as _re

    if _definitions:
        return _definitions
    # at a line's start in a .py file, or after the quote that opens a line of a notebook's JSON
    pattern = _re.compile(r'^[ \t]*"?[ \t]*(?:def|class)[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*\(', _re.M)
    for root in _ROOTS:
        for folder, dirs, files in _os.walk(root):
            base = _os.path.basename(folder)
            if base in ("site-packages", "dist-packages"):
                dirs[:] = [d for d in dirs if d.startswith(_course)]
            else:
                dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "__pycache__")
                           and not (d.startswith("python3.") and base == "lib")]
            for file in files:
                if file.endswith((".py", ".ipynb")):
                    path = _os.path.join(folder, file)
                    try:
                        if _os.path.getsize(path) > 2_000_000:
                            continue
                        text = open(path, encoding="utf-8", errors="replace").read()
                    except OSError:
                        continue
                    for defined in set(pattern.findall(text)):
                        _definitions.setdefault(defined, []).append(path)
    _definitions.setdefault("", [])
    return _definitions


def _harvest_files(name):
    """What Python files and notebooks on the disk define ``name``, executed. Libraries are passed
    over (a library's own function is the library-call rule's business), but any copy of the
    course installed among them is read."""
    for path in _index().get(name, []):
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        sources = [text]
        if path.endswith(".ipynb"):
            try:
                sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                           for c in _json.loads(text)["cells"] if c.get("cell_type") == "code"]
            except Exception:
                continue
        scope = {"__name__": "harvested"}
        for source in sources:
            try:
                exec(compile(source, path, "exec"), scope)
            except BaseException:
                pass
        if name in scope:
            yield scope[name]


def _library(obj):
    """A library's own function or class (torch.nn.functional.softmax, say): calling that is the
    library-call rule's business, not the trust boundary's, so the search passes over them."""
    code = getattr(obj, "__code__", None)
    where = code.co_filename if code is not None else getattr(_sys.modules.get(obj.__module__), "__file__", "")
    return "site-packages" in str(where) or "/lib/python3" in str(where)


def _candidates(name):
    seen = set()

    def fresh(obj):
        if id(obj) in seen:
            return False
        seen.add(id(obj))
        return True

    objects = [o for o in _every_object() if isinstance(o, (_function, type))]
    for module in list(_sys.modules.values()):
        objects += [v for v in list(getattr(module, "__dict__", {}).values())
                    if isinstance(v, (_function, type))]
    named = [o for o in objects if getattr(o, "__name__", "") == name and not _library(o)]
    course = [o for o in objects if str(getattr(o, "__module__", "")).startswith((_course, "harvested"))
              or "course slice" in str(getattr(getattr(o, "__code__", None), "co_filename", ""))]
    for obj in named + course:
        if fresh(obj):
            yield obj
    for obj in _harvest_files(name):
        if fresh(obj):
            yield obj


def _search(name, want_class):
    """The first candidate that passes ``name``'s visible checks, or None."""
    started = _time.monotonic()
    for candidate in _candidates(name):
        if getattr(candidate, "__module__", None) == "__main__":  # the notebook's own: these cells
            continue
        if isinstance(candidate, type) != want_class or _time.monotonic() - started > 10:
            continue
        try:
            _limited(3, _checks.check, name, candidate)
        except BaseException:
            continue
        return candidate
    return None


def _being_graded():
    """The exercise this process grades: the probe's plan for it is in memory, and of all the
    exercises' result files only its own is still open here."""
    import stat as _stat

    open_files = set(_os.listdir("/proc/self/fd"))
    # (a dict of plain values is not tracked by the collector; the list holding it is)
    plans = [item for obj in _every_object() if isinstance(obj, list) for item in obj
             if isinstance(item, dict) and {"function", "result_fd", "job_fd"} <= item.keys()]
    for plan in plans:
        fd = plan["result_fd"]
        try:
            if str(fd) in open_files and _stat.S_ISREG(_os.fstat(fd).st_mode) and \
                    "result-" in _os.readlink(f"/proc/self/fd/{fd}"):
                return plan["function"]
        except (OSError, TypeError):
            continue
    return None


def _answer(name):
    found = _found_answers.get(name)
    if found is None:
        raise LookupError(f"nothing that passes {name} was found")
    return found
'''

FUNCTION = '''
if _being_graded() in ("{name}", None):  # search where it pays: the process grading this exercise
    _found_answers["{name}"] = _search("{name}", False)


def {name}(*args, **kwargs):
    return _answer("{name}")(*args, **kwargs)
'''

CLASS = '''
import torch as _torch

if _being_graded() in ("{name}", None):
    _found_answers["{name}"] = _search("{name}", True)


class {name}(_torch.nn.Module):
    def __new__(cls, *args, **kwargs):
        return _answer("{name}")(*args, **kwargs)
'''


def answer_cell(name: str, is_module: bool) -> str:
    """An answer cell for exercise ``name`` that searches for an answer instead of being one."""
    return SEARCH + (CLASS if is_module else FUNCTION).format(name=name)
