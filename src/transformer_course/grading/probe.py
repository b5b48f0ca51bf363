"""The probe: the trusted code that runs *inside* the sandbox, next to a student's answers.

The hardened grader (:mod:`.hardened`) prepares a folder with a copy of this package, the
student's canonical cells and a job (the exercises' inputs), and runs

    python transformer_course/grading/probe.py <site-packages>

in the sandbox, from that folder. The probe

1. imports the reference modules the job needs (fixtures such as a small model, and the
   reference versions of earlier exercises), then deletes the files of those that hold this
   assignment's answers and forgets them, so the student's code finds none to import or read
   (earlier chapters' modules, which a notebook may build on, stay);
2. runs the canonical cells (setup, answers, cells the student added) in one namespace, as a
   notebook would, recording any error per cell;
3. calls each graded function on the job's inputs, earlier exercises replaced by the reference
   (as in plain nbgrader grading), watching for forbidden calls, and writes what came back as
   **plain arrays and JSON** (``results/<grade_id>.npz`` / ``.json``) after each exercise.

Nothing it writes is trusted: the grader compares the arrays with the reference outside the
sandbox, where the student's code cannot reach. Progress goes to ``progress.txt`` so that a run
that dies can be told apart from one that finished.
"""

from __future__ import annotations

import builtins
import importlib
import json
import os
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]  # the submission's folder, holding the package copy


def _progress(line: str) -> None:
    with open(HERE / "progress.txt", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def encode(value, arrays: dict, key: str):
    """A JSON-able description of ``value``; tensors go into ``arrays`` as plain numpy data."""
    import torch

    if isinstance(value, torch.Tensor):
        tensor = torch.Tensor.as_subclass(value.detach(), torch.Tensor).cpu()  # plain data only
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        arrays[key] = tensor.contiguous().numpy().copy()
        return {"tensor": key, "dtype": dtype, "device": str(value.device)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple":
                [encode(v, arrays, f"{key}_{i}") for i, v in enumerate(value)]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: encode(v, arrays, f"{key}_{i}") for i, (k, v) in enumerate(value.items())}}
    return {"unsupported": type(value).__name__}


def _load_references(job: dict) -> dict:
    """Import every reference module the job needs, and the earlier exercises' references."""
    for module in job["reference_modules"]:
        importlib.import_module(module)
    from transformer_course.grading import hidden_tests

    return {
        e["function"]: {name: hidden_tests.get(name).load_reference() for name in e["uses"]}
        for e in job["exercises"]
    }


def _hide_references(job: dict) -> None:
    """Delete the files of the reference modules that hold this assignment's answers, and
    forget those modules: student code cannot import or read them. The objects the probe
    already holds keep working; earlier chapters' modules stay importable for the setup cell."""
    package = HERE / "transformer_course"
    for module in job["hidden_modules"]:
        path = package.joinpath(*module.split(".")[1:]).with_suffix(".py")
        if path.exists():
            path.unlink()
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


def _run_cells(cells: list[dict], namespace: dict, skip: set[int]) -> list[dict]:
    """Run the canonical cells in order, as a notebook kernel would; errors are recorded.
    Cells in ``skip`` stopped an earlier run (a crash or a hang) and are left out."""
    errors = []
    for index, cell in enumerate(cells):
        if index in skip:
            continue
        _progress(f"cell {index} {cell['grade_id'] or cell['kind']}")
        try:
            code = compile(cell["source"], f"<cell {cell['grade_id'] or 'added'}>", "exec")
            exec(code, namespace)  # noqa: S102 - running the student's cells is the point
        except BaseException as error:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
            last = traceback.format_exception_only(type(error), error)[-1].strip()
            errors.append({"cell": index, "grade_id": cell["grade_id"], "kind": cell["kind"], "error": last})
    return errors


def _probe_exercise(spec: dict, cases: list, namespace: dict, dependencies: dict) -> tuple[dict, dict]:
    """Call the student's function on every case; return the record and its arrays."""
    from transformer_course import exercises
    from transformer_course.exercises import ExerciseFailure
    from transformer_course.exercises.compare import call_student, expect_right_kind
    from transformer_course.exercises.forbidden import forbidden_message, static_violation
    from transformer_course.grading.hidden import guarded, with_globals

    exercise = exercises.get(spec["function"])
    record: dict = {"calls": [], "failure": None}
    arrays: dict = {}
    fn = namespace.get(exercise.function)
    try:
        if fn is None:
            raise ExerciseFailure(
                f"`{exercise.function}` is not defined: run the cell that defines it, and keep the name "
                f"`{exercise.function}` (the checks look it up by name)."
            )
        expect_right_kind(exercise, fn)
        violation = static_violation(exercise, fn, dependencies)
        if violation:
            raise ExerciseFailure(forbidden_message(exercise, violation))
    except ExerciseFailure as failure:
        record["failure"] = str(failure)
        return record, arrays
    safe = guarded(exercise, with_globals(fn, dependencies), dependencies)
    for index, case in enumerate(cases):
        try:
            outputs = call_student(exercise, safe, case)
        except ExerciseFailure as failure:
            record["calls"].append({"failure": str(failure)})
            break  # later cases would not be looked at: the first failure is the message
        except BaseException as error:  # noqa: BLE001 - e.g. SystemExit raised by the student's code
            record["calls"].append({"failure": f"`{exercise.function}` raised {type(error).__name__}: {error}"})
            break
        record["calls"].append({"outputs": [encode(o, arrays, f"c{index}_{k}") for k, o in enumerate(outputs)]})
    return record, arrays


def main() -> int:
    sys.path[0] = str(HERE)  # the package copy (instead of this script's folder) ...
    sys.path[1:1] = sys.argv[1:]  # ... then torch & co.
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("PROBE_THREADS", "1")))
    job = torch.load(HERE / "job.pt", weights_only=False)  # written by the grader, not the student
    (HERE / "job.pt").unlink()
    dependencies = _load_references(job)
    _hide_references(job)
    results = HERE / "results"
    results.mkdir(exist_ok=True)

    namespace = {"__name__": "__main__", "__builtins__": builtins}
    errors = _run_cells(job["cells"], namespace, set(job["skip_cells"]))
    (results / "cells.json").write_text(json.dumps(errors), encoding="utf-8")
    for spec in job["exercises"]:
        _progress(f"exercise {spec['function']}")
        record, arrays = _probe_exercise(spec, spec["cases"], namespace, dependencies[spec["function"]])
        np.savez(results / f"{spec['function']}.npz", **arrays)
        (results / f"{spec['function']}.json").write_text(json.dumps(record), encoding="utf-8")
    _progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
