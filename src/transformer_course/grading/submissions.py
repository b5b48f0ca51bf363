"""Finding the submissions: a folder or a zip, in any of the layouts instructors get.

* ``<student>/<notebook>.ipynb`` — one folder per student (nbgrader's own layout, JupyterHub);
* ``<student>.ipynb`` — one file per student;
* what learning-management systems download, with the student in each name:
  - Canvas: ``smithjohn_12345_678901_attention.ipynb`` (``smithjohn_late_12345_...`` when late);
  - Moodle: ``John Smith_12345_assignsubmission_file_/attention.ipynb``;
  - Blackboard: ``Homework 4_jsmith_attempt_2026-11-20-09-30-00_attention.ipynb`` (the latest
    attempt of each student is graded, with a note; Blackboard's ``.txt`` receipts are ignored);
* a zip of any of these (also when everything sits in one top folder inside the zip).
"""

from __future__ import annotations

import re
import shutil
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

_SAFE = re.compile(r"[^A-Za-z0-9_.@+-]")

# Limits for unpacking a zip: a class of notebooks is megabytes; anything far bigger is a mistake
# or a zip bomb, and is refused with a message rather than filling the disk.
MAX_ZIP_ENTRIES = 20_000
MAX_ZIP_BYTES = 2 * 1024**3

_CANVAS = re.compile(r"^(?P<student>[^_]+)(?:_LATE)?_(?P<user>\d+)_(?P<submission>\d+)_(?P<file>.+)$", re.I)
_BLACKBOARD = re.compile(
    r"^(?P<assignment>.+?)_(?P<student>[^_]+)_attempt_(?P<when>\d{4}(?:-\d\d){5})(?:_(?P<file>.+))?$"
)
_MOODLE = re.compile(r"^(?P<student>.+?)_(?P<participant>\d+)_assignsubmission_[a-z]+_?$")


@dataclass
class Submission:
    """A student's notebook (``path``), or why there is none (``problem``)."""

    student: str
    path: Path | None
    problem: str | None = None
    notes: list[str] = field(default_factory=list)  # things the instructor should know


def safe_id(student: str) -> str:
    """A student id usable as a file and folder name (and by nbgrader): accents are dropped
    ("José" -> "Jose"), other characters become '_'. Two students may get the same safe id:
    :func:`unique_ids` tells them apart."""
    plain = unicodedata.normalize("NFKD", student).encode("ascii", "ignore").decode("ascii")
    return _SAFE.sub("_", plain).strip(".") or "_"


def unique_ids(students: list[str]) -> list[str]:
    """A distinct safe id per student, in order: "ana", "ana-2", ... where safe ids collide."""
    used: set[str] = set()
    ids = []
    for student in students:
        base = safe_id(student)
        candidate, n = base, 1
        while candidate.lower() in used:  # case too: "Ana" and "ana" may share a file system
            n += 1
            candidate = f"{base}-{n}"
        used.add(candidate.lower())
        ids.append(candidate)
    return ids


def _pick_notebook(folder: Path, expected: list[str]) -> tuple[Path | None, str | None, str | None]:
    """The notebook in a student's folder: (path, problem, note)."""
    notebooks = sorted(
        p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )
    for name in expected:
        for p in notebooks:
            if p.name == name:
                return p, None, None
    if len(notebooks) == 1:
        return notebooks[0], None, f"graded {notebooks[0].name} as {expected[0]}"
    if not notebooks:
        return None, f"no notebook (.ipynb) in the folder {folder.name}/", None
    names = ", ".join(p.name for p in notebooks)
    return None, f"several notebooks ({names}) and none is called {expected[0]}", None


def student_of_file(stem: str) -> tuple[str, str | None]:
    """The student a flat file belongs to, from its name without ``.ipynb``: (student, attempt).

    ``attempt`` orders several files of one student (Blackboard's timestamp), or is None.
    """
    # Canvas first: its name starts with the student, so nothing after it (the file name the
    # student chose) can decide who it is. Blackboard's starts with the assignment, matched lazily,
    # and a Canvas name whose file part looked like a Blackboard attempt of a classmate would
    # otherwise be graded as that classmate's.
    match = _CANVAS.match(stem)
    if match:
        return match["student"], None
    match = _BLACKBOARD.match(stem)
    if match:
        return match["student"], match["when"]
    return stem, None


def student_of_folder(name: str) -> str:
    """The student a folder belongs to: Moodle's ``Name_123_assignsubmission_file_`` or the name."""
    match = _MOODLE.match(name)
    return match["student"] if match else name


def find_submissions(folder: Path, expected: list[str], skip: Path | None = None) -> list[Submission]:
    """Every student's submission in ``folder``, sorted by student.

    ``expected`` lists the assignment's notebook file names; a student folder with one notebook
    of another name is graded as that notebook (students rename files), with a note. ``skip``
    is a folder to pass over (the reports' folder, when it lies among the submissions).
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of submissions")
    found: dict[str, Submission] = {}
    attempts: dict[str, str] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if skip is not None and entry.resolve() == skip.resolve():
            continue
        if entry.is_symlink():  # a link could hand in someone else's notebook, or a file of the machine
            student = student_of_folder(entry.name) if not entry.name.endswith(".ipynb") else \
                student_of_file(entry.stem)[0]
            found.setdefault(student, Submission(student, None, f"{entry.name} is a link, not a notebook "
                                                                 "or a folder: links are not graded"))
            continue
        if entry.is_dir():
            student = student_of_folder(entry.name)
            path, problem, note = _pick_notebook(entry, expected)
            if student in found:
                found[student].notes.append(f"also sent the folder {entry.name}/, which was not graded")
                continue
            found[student] = Submission(student, path, problem, [note] if note else [])
        elif entry.suffix == ".ipynb":
            student, attempt = student_of_file(entry.stem)
            if student in found:
                earlier = found[student]
                if attempt is not None and attempt > attempts.get(student, ""):
                    # a later Blackboard attempt replaces the earlier one
                    attempts[student] = attempt
                    replaced = earlier.path.name if earlier.path else "an earlier attempt"
                    found[student] = Submission(student, entry, notes=[
                        *earlier.notes, f"graded the latest attempt; {replaced} was not graded"])
                else:
                    earlier.notes.append(f"also sent {entry.name}, which was not graded")
                continue
            if attempt is not None:
                attempts[student] = attempt
            found[student] = Submission(student, entry)
    return [found[s] for s in sorted(found)]


class SubmissionsError(ValueError):
    """The submissions cannot be read at all (a damaged or oversized zip, say)."""


def unpack(zip_path: Path, into: Path) -> Path:
    """Unpack a zip of submissions safely into ``into``; return the folder that holds them.

    Refuses entries that would land outside ``into`` (``../``, absolute paths), symbolic
    links, and zips that are too large when unpacked. When everything sits in one top folder
    (a zipped class folder), that folder is returned.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise SubmissionsError(f"{zip_path} is not a readable zip file ({error})") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ZIP_ENTRIES:
            raise SubmissionsError(f"{zip_path} holds {len(entries)} files; at most {MAX_ZIP_ENTRIES} are unpacked")
        total = sum(e.file_size for e in entries)
        if total > MAX_ZIP_BYTES:
            raise SubmissionsError(
                f"{zip_path} unpacks to {total / 1024**3:.1f} GiB; at most {MAX_ZIP_BYTES / 1024**3:.0f} GiB "
                "are unpacked (is it really a class's notebooks?)"
            )
        into.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            name = PurePosixPath(entry.filename.replace("\\", "/"))
            is_link = (entry.external_attr >> 16) & 0o170000 == 0o120000
            if name.is_absolute() or ".." in name.parts or is_link:
                raise SubmissionsError(f"{zip_path} contains an unsafe entry {entry.filename!r}; not unpacked")
            target = into.joinpath(*name.parts)
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(entry) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
    visible = [p for p in into.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(visible) == 1 and visible[0].is_dir() and not any(visible[0].glob("*.ipynb")):
        return visible[0]  # one top folder of student folders
    if len(visible) == 1 and visible[0].is_dir() and len(list(visible[0].glob("*.ipynb"))) > 1:
        return visible[0]  # one top folder of <student>.ipynb files
    return into


def collect(source: Path, expected: list[str], workdir: Path, skip: Path | None = None) -> list[Submission]:
    """The submissions in ``source``, a folder or a ``.zip`` (unpacked under ``workdir``)."""
    if source.is_file() and source.suffix.lower() == ".zip":
        return find_submissions(unpack(source, workdir / "unzipped"), expected)
    if source.is_file():
        raise SubmissionsError(f"{source} is a file, not a folder or a .zip of submissions")
    return find_submissions(source, expected, skip=skip)
