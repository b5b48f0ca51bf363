"""Calling a student's function and comparing what it returns, with messages a student can act on.

Every failure raises :class:`ExerciseFailure` whose message says *what* differs, *where* and by
*how much*, and, when we can tell, the likely mistake. Shared by the visible checks (worked
examples in the notebook) and the hidden checks (comparison with the reference).
"""

from __future__ import annotations

import contextlib
import linecache
import math
import os
import re
import reprlib
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import torch

from .base import Case, Exercise, ExerciseFailure
from .forbidden import raise_if_forbidden

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fmt_index(index: Sequence[int]) -> str:
    """``(0, 2, 1)`` -> ``"[0, 2, 1]"``, the way a student would index the tensor."""
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def fmt_number(x: float) -> str:
    """A short, readable number: 0.31, 1.2e-07, nan, inf."""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.4g}"


def _student_line(tb: Any) -> str:
    """The last line of the student's own code in a traceback, or '' if there is none.

    A notebook's cells are in ``linecache`` (IPython puts them there, and so does the grader's
    probe, which runs the same cells in its sandbox), so the line is the same in both."""
    line = ""
    for frame in traceback.extract_tb(tb):
        filename = frame.filename
        if "site-packages" in filename or filename.startswith(_PACKAGE_DIR):
            continue
        text = frame.line or linecache.getline(filename, frame.lineno).strip()
        if text:
            line = text
    return shown(line, 200)


# Control characters (a terminal escape could rewrite the summary table), lone surrogates (they
# cannot be written as UTF-8: one in a message stopped every report being written), and the
# characters that move text about without being seen: line and paragraph separators, and the
# marks and overrides of bidirectional text (U+202E shows what follows it backwards).
_UNPRINTABLE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def shown(text: str, limit: int = 1000) -> str:
    """Text that came from the student's code (an exception's message, a line of theirs) as every
    message shows it, in the notebook and in the grader's reports alike: at most ``limit``
    characters, control characters (but newlines and tabs) and invisible text movers written as
    escapes (``\\x1b``, ``\\u202e``)."""
    if len(text) > limit:
        text = text[:limit] + f" ... ({len(text) - limit} more characters left out)"
    return _UNPRINTABLE.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


_NUMBER = re.compile(r"0x[0-9a-fA-F]+|[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def normalised(text: str) -> str:
    """``text`` with every number written as ``#``: two errors that differ only in the sizes
    they name (``size of tensor a (4)`` / ``(6)``) read the same."""
    return _NUMBER.sub("#", text)


def raised_text(error: BaseException) -> str:
    """How a message says what the student's code raised: ``raised RuntimeError: ...``."""
    return f"raised {shown(type(error).__name__, 100)}: {shown(str(error))}"


def raise_signature(error: BaseException) -> str:
    """What identifies the way a call failed, for naming a typical mistake that fails the same way
    (see :mod:`.recorded`): the first line of the failure's message, numbers normalised. A failure
    of the checks' own (a module that cannot be given the weights, say) is an ExerciseFailure and
    its message is the whole message; anything else the code raised reads ``raised Type: ...``."""
    text = str(error) if isinstance(error, ExerciseFailure) else raised_text(error)
    return normalised(text.split("\n", 1)[0])


def same_failure(signature: str, message: str) -> bool:
    """Whether the failure ``message`` (as a check writes it) is one with ``signature``."""
    return normalised(message.split("\n", 1)[0]).endswith(signature)


_reported: set[str] = set()


def report_warnings(name: str, caught: list[warnings.WarningMessage]) -> None:
    """Print each new warning the student's code raised, on stdout (see call_student)."""
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in _reported:
            _reported.add(text)
            print(f"note: `{name}` triggered a warning (not an error, but worth a look):\n  {text}")


def expect_right_kind(exercise: Exercise, fn: Any) -> None:
    """Raise unless ``fn`` is what the exercise asks for: a class for a module, else a function."""
    __tracebackhide__ = True
    ok = isinstance(fn, type) if exercise.is_module else callable(fn) and not isinstance(fn, type)
    if not ok:
        kind = "class (derived from nn.Module)" if exercise.is_module else "function"
        raise ExerciseFailure(
            f"`{exercise.function}` should be a {kind}, but it is {_a(type(fn).__name__)}: "
            f"define it with `{'class' if exercise.is_module else 'def'} {exercise.function}`."
        )


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def run_case(fn: Callable[..., Any], case: Case) -> Any:
    """What ``fn`` returns on ``case``: a plain call, or for a module class, build then call.

    A module is built with ``case.init``, given the case's weights (``load_state_dict``),
    moved to the case's dtype and device and put in eval mode (no dropout) before the call.
    The call goes through ``case.apply`` (see :meth:`.base.Case.apply`): a case may prepare its
    inputs and collect more than the return value (a training step's parameters afterwards).
    """
    if case.init is None:
        return case.apply(fn)
    module = build_module(fn, case)
    return case.apply(module)


def build_module(cls: Callable[..., Any], case: Case) -> torch.nn.Module:
    """``cls(*case.init, **case.init_kwargs)`` with the case's weights loaded (see run_case)."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "the class")
    arguments = ", ".join([*map(repr, case.init), *(f"{k}={v!r}" for k, v in case.init_kwargs.items())])
    call = f"{name}({arguments})"
    module = cls(*case.init, **case.init_kwargs)
    if not isinstance(module, torch.nn.Module):
        raise ExerciseFailure(
            f"{call} made a {type(module).__name__}; `{name}` should be a class derived from "
            f"torch.nn.Module (class {name}(nn.Module): ...)."
        )
    if case.state is not None:
        mine = module.state_dict()
        missing = sorted(set(case.state) - set(mine))
        extra = sorted(set(mine) - set(case.state))
        if missing or extra:
            raise ExerciseFailure(
                f"{call} has parameters named differently from the reference, so the checks "
                f"cannot give it the reference's weights.\n  missing: {', '.join(missing) or '-'}"
                f"\n  unexpected: {', '.join(extra) or '-'}\n  Hint: use the names and "
                "submodules given in the exercise (e.g. self.q_proj = nn.Linear(...))."
            )
        for key, value in case.state.items():
            if tuple(mine[key].shape) != tuple(value.shape):
                raise ExerciseFailure(
                    f"{call}: `{key}` has shape {tuple(mine[key].shape)}, the reference's has "
                    f"{tuple(value.shape)}{_shape_advice(module, key, tuple(mine[key].shape), tuple(value.shape))}"
                )
        module.load_state_dict(case.state)
    module.to(device=case.device, dtype=case.dtype)
    return module.eval()


def _shape_advice(module: torch.nn.Module, key: str, mine: tuple, want: tuple) -> str:
    """What a parameter of the wrong shape says about how its layer was built."""
    owner, _, kind = key.rpartition(".")
    try:
        layer = module.get_submodule(owner) if owner else module
    except AttributeError:
        layer = None
    if not (isinstance(layer, torch.nn.Linear) and kind == "weight" and len(mine) == len(want) == 2):
        return "."
    right = f"nn.Linear({want[1]}, {want[0]})"
    if mine == want[::-1]:
        return (f": nn.Linear(in_features, out_features) stores its weight as (out, in), so `{owner}` is "
                f"nn.Linear({mine[1]}, {mine[0]}) where {right} is wanted: in and out are swapped.")
    if mine[0] == want[0]:
        return f": `{owner}` takes {mine[1]} input features where {want[1]} come in: build it as {right}."
    if mine[1] == want[1]:
        return f": `{owner}` gives {mine[0]} output features where {want[0]} are wanted: build it as {right}."
    return f": build `{owner}` as {right} (nn.Linear stores its weight as (out, in))."


def _raise_instead(error: type[Exception]) -> str:
    return f"raise {error.__name__}(\"...\") with a message that says what is wrong."


def call_student(exercise: Exercise, fn: Callable[..., Any], case: Case,
                 watch: Callable[[], Any] | None = None) -> tuple[torch.Tensor, ...]:
    """Call ``fn`` on a copy of the case and return its outputs as a tuple of tensors.

    Raises ExerciseFailure if it is not implemented, raises, changes its inputs, or returns
    the wrong kind, number, dtype or device of outputs. A case with ``raises`` turns that
    round: raising that exception returns ``()``; returning fails.

    ``watch`` makes a :class:`~.forbidden.Tripwire` (see :func:`.running.watcher`): it is active
    for the whole call, building a module included (``__new__``, a metaclass, ``__init__``,
    ``load_state_dict``, ``forward``), and a forbidden call it saw fails the exercise whatever
    the call returned or raised.
    """
    __tracebackhide__ = True
    from .recorded import recorded_raise  # (it reads the registry, which imports this module)

    name = exercise.function
    inputs = case.clone()
    tripwire = watch() if watch is not None else contextlib.nullcontext()
    violation = None
    try:
        # A warning would go to stderr, and nbgrader gives 0 to a test cell that writes to
        # stderr; we pass warnings on to stdout instead, once each.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                # Everything that touches what the answer returned or changed stays under the watch,
                # until the outputs are plain tensors: an input whose class the answer changed, a
                # tuple subclass or a warning's message runs the answer's code when looked at, and
                # did a forbidden call there, unwatched, after the call (found by an attack round).
                with tripwire:
                    result = run_case(fn, inputs)
                    outputs = _after_the_call(exercise, case, inputs, result, caught)
            finally:
                violation = getattr(tripwire, "violation", None)
                raise_if_forbidden(exercise, violation)
    except NotImplementedError:
        raise ExerciseFailure(
            f"`{name}` is not implemented yet: replace `raise NotImplementedError()` with your code."
        ) from None
    except ExerciseFailure as failure:
        # (e.g. a module that cannot be given the case's weights): a typical mistake fails the same way?
        likely = None if violation else recorded_raise(name, case.label, failure)
        if likely is None:
            raise
        raise ExerciseFailure(f"{failure}\n  Likely mistake: {likely}") from None
    except Exception as error:  # noqa: BLE001 - any error in student code becomes a message
        if case.raises is not None and isinstance(error, case.raises):
            return ()  # refused, as this case asks
        where = _student_line(error.__traceback__)
        where = f"\n  in your line: {where}" if where else ""
        wanted = f"\n  This input is one to refuse: check for it first and {_raise_instead(case.raises)}" \
            if case.raises else ""
        likely = recorded_raise(name, case.label, error)
        likely = f"\n  Likely mistake: {likely}" if likely else ""
        raise ExerciseFailure(
            f"`{name}` {raised_text(error)}\n  on {case.label}{where}{wanted}{likely}"
        ) from None
    if case.raises is not None:
        raise ExerciseFailure(
            f"`{name}` should raise {case.raises.__name__} on {case.label}, but it returned a result. "
            f"Check for this input first and {_raise_instead(case.raises)}"
        )
    return outputs


_PLAIN_TYPES = (bool, int, float, str, type(None), list, tuple, dict, set)


def _not_plain(value: Any) -> str | None:
    """The name of the first type in ``value`` (walked without recursion) that is not a plain Python
    value (a subclass of list or dict runs its own code when read), or None."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if type(item) not in _PLAIN_TYPES:
            return type(item).__name__
        if type(item) is dict:
            stack.extend(dict.keys(item))
            stack.extend(dict.values(item))
        elif type(item) in (list, tuple, set):
            stack.extend(item)
        if seen > 10_000_000:
            return "a value of more than ten million parts"
    return None


def _after_the_call(exercise: Exercise, case: Case, inputs: Case, result: Any,
                    caught: list[warnings.WarningMessage]) -> tuple:
    """What :func:`call_student` checks once the answer has returned (inside its watch): that it did
    not return for an input to refuse, did not change its inputs, and returned plain outputs."""
    __tracebackhide__ = True
    name = exercise.function
    if case.raises is not None:
        return ()  # decided by call_student: refused (raised) or not (returned)
    report_warnings(name, caught)
    for before, after in zip((*case.args, *case.kwargs.values()), (*inputs.args, *inputs.kwargs.values())):
        if isinstance(before, torch.Tensor) and type(after) is not type(before):
            raise ExerciseFailure(
                f"`{name}` changed the type of one of its input tensors on {case.label} (to "
                f"{type(after).__name__}): leave the inputs as they are."
            )
        if isinstance(before, torch.Tensor) and not torch.equal(before, after):
            raise ExerciseFailure(
                f"`{name}` changed one of its input tensors in place on {case.label}: "
                "use out-of-place operations (x - m, not x -= m or x.sub_(m))."
            )
        if exercise.plain_values and isinstance(before, (list, dict, set)) and before != after:
            raise ExerciseFailure(
                f"`{name}` changed one of its inputs in place on {case.label} (it was "
                f"{_preview(before)}, afterwards {_preview(after)}): build a new list or dict "
                "and return it (out = [] ... out.append(...)), leaving the input as it was."
            )
    return normalise_outputs(exercise, result, case)


def normalise_outputs(exercise: Exercise, result: Any, case: Case) -> tuple[torch.Tensor, ...]:
    """Check the kind, number, dtype and device of what came back; return a tuple of tensors."""
    __tracebackhide__ = True
    names = exercise.output_names
    name = exercise.function
    if len(names) == 1:
        outputs = (result,)
    else:
        wanted = "(" + ", ".join(names) + ")"
        # Exactly a tuple or list (a subclass would run its own code when read), or one of torch's
        # named tuples (torch.topk's result), which cannot be subclassed.
        if type(result) not in (tuple, list) and type(result).__module__ != "torch.return_types":
            raise ExerciseFailure(
                f"`{name}` should return a tuple {wanted}, but returned a {type(result).__name__}."
            )
        if len(result) != len(names):
            raise ExerciseFailure(
                f"`{name}` should return {len(names)} values {wanted}, but returned {len(result)}."
            )
        outputs = tuple(result)
    dtype = case.dtype
    device = case.device
    if exercise.plain_values:
        for out, out_name in zip(outputs, names):
            odd = None if isinstance(out, torch.Tensor) else _not_plain(out)
            if odd is not None:
                raise ExerciseFailure(
                    f"`{name}` returned a {odd} in `{out_name}`; return plain Python values (lists, dicts, "
                    "tuples of ints and strings), not subclasses of them."
                )
            if out is None:
                raise ExerciseFailure(f"`{name}` returned None for `{out_name}`: did you forget the `return`?")
            if isinstance(out, torch.Tensor):
                raise ExerciseFailure(
                    f"`{name}` returned a tensor for `{out_name}`; return plain Python values "
                    "(a list, a dict, ...): for a tensor t, t.tolist() is its list."
                )
        return outputs
    for out, out_name in zip(outputs, names):
        if result is None:
            raise ExerciseFailure(f"`{name}` returned None: did you forget the `return`?")
        if not isinstance(out, torch.Tensor):
            raise ExerciseFailure(
                f"`{name}` returned a {type(out).__name__} for `{out_name}`; return a torch.Tensor."
            )
        # type(), not isinstance: a Tensor subclass can redefine ==, allclose and every other
        # operation a check would use (via __torch_function__), so only plain tensors are graded.
        if type(out) not in (torch.Tensor, torch.nn.Parameter):
            raise ExerciseFailure(
                f"`{name}` returned a {type(out).__name__} (a subclass of torch.Tensor) for `{out_name}`; "
                "return a plain torch.Tensor."
            )
        if out_name in exercise.index_outputs:
            if out.is_floating_point() or out.is_complex() or out.dtype == torch.bool:
                raise ExerciseFailure(
                    f"`{out_name}` has dtype {out.dtype} on {case.label}; indices are integers "
                    "(torch.long), as torch.topk and torch.argsort return them. (Are the values "
                    f"you return in the order {', '.join(names)}?)"
                )
        elif dtype is not None and out.dtype != dtype:
            raise ExerciseFailure(
                f"`{out_name}` has dtype {out.dtype} for {dtype} inputs on {case.label}: keep the "
                "inputs' dtype (a tensor made with an explicit dtype, or a numpy round trip, "
                "changes it)."
            )
        if device is not None and out.device != device:
            if case.asks_for_device:
                raise ExerciseFailure(
                    f"`{out_name}` is on {out.device} but device={device.type!r} was asked for on {case.label}: "
                    f"create the {out_name} on the device you are given, with device=device (or move it "
                    "there at the end with .to(device))."
                )
            raise ExerciseFailure(
                f"`{out_name}` is on {out.device} but the inputs are on {device}: create new "
                "tensors on the inputs' device (e.g. torch.zeros(..., device=x.device))."
            )
    return outputs


def mismatch(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    what: str,
    rtol: float,
    atol: float,
) -> str | None:
    """Why ``actual`` is not close to ``expected``, or None when it is.

    The message names the place of the largest difference and how many entries are off.
    NaN in both places counts as equal; NaN on one side only is reported as such.
    """
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    a_bad, e_bad = ~torch.isfinite(a), ~torch.isfinite(e)
    unexpected = a_bad & ~e_bad
    if unexpected.any():
        index = tuple(unexpected.nonzero()[0].tolist())
        kind = "NaN" if math.isnan(a[index].item()) else "inf"
        count = int(unexpected.sum())
        return (
            f"{what} contains {kind} at {fmt_index(index)} where {fmt_number(e[index].item())} "
            f"was expected ({count} non-finite entr{'y' if count == 1 else 'ies'})"
        )
    close = torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    if bool(close.all()):
        return None
    diff = (a - e).abs().nan_to_num(nan=math.inf)
    diff = torch.where(close, torch.zeros_like(diff), diff)
    flat = int(diff.argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape)) if a.dim() else ()
    count = int((~close).sum())
    return (
        f"{what}: max abs difference {fmt_number(diff.max().item())} at {fmt_index(index)} "
        f"(got {fmt_number(a[index].item())}, expected {fmt_number(e[index].item())}); "
        f"{count} of {a.numel()} entries differ"
    )


def index_mismatch(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    what: str,
    words: Callable[[tuple[int, ...], int, int], str] | None = None,
) -> str | None:
    """Why the indices ``actual`` (token ids, rows of a table) differ from ``expected``, or None.

    Indices are names, not quantities: the message says which one differs and what it is instead
    of "how far off" it is. ``words(index, got, expected)`` says it in the exercise's terms
    ("row 2: neighbour 1 is token 7, expected token 3"); without it, "at [2, 1] it is 7, expected 3".
    """
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    a, e = actual.detach().cpu(), expected.detach().cpu()
    differ = a != e
    if not bool(differ.any()):
        return None
    index = tuple(int(i) for i in differ.nonzero()[0].tolist())
    got, want = int(a[index].item()), int(e[index].item())
    where = words(index, got, want) if words else f"at {fmt_index(index)} it is {got}, expected {want}"
    count = int(differ.sum())
    return f"{what}: {where} ({count} of {a.numel()} entries differ)"


_SHORT_REPR = reprlib.Repr()  # (keyword arguments need Python 3.12)
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 60, 60
_SHORT_REPR.maxdict = _SHORT_REPR.maxset = 6
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = 8


def _preview(value: Any, width: int = 70) -> str:
    """``repr(value)``, shortened to about ``width`` characters (``reprlib`` never writes out the
    whole of a long string or list: a student's value may be megabytes)."""
    text = _SHORT_REPR.repr(value)
    if len(text) <= width:
        return text
    return text[: width - 5] + " ..." + (text[-1] if text[-1] in ")]}" else "")


def _kind(value: Any) -> str:
    return _a(type(value).__name__)


def _plain_difference(actual: Any, expected: Any, path: str) -> str | None:
    """The first place where two plain values differ, written as the student would index it.

    Lists and tuples count as the same kind of sequence (a merge may be ``[a, b]`` or
    ``(a, b)``); dicts are compared key by key; anything else with ``==``.
    """
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)):
            return f"{path} is {_kind(actual)}, expected {_kind(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            problem = _plain_difference(a, e, f"{path}[{i}]")
            if problem:
                if len(actual) != len(expected):
                    problem += f" (and {path} has {len(actual)} items, expected {len(expected)})"
                return problem
        n = min(len(actual), len(expected))
        if len(actual) > n:
            return (f"{path} has {len(actual)} items, expected {len(expected)}: "
                    f"{path}[{n}] = {_preview(actual[n])} should not be there")
        if len(expected) > n:
            return (f"{path} has {len(actual)} items, expected {len(expected)}: "
                    f"{path}[{n}] (expected {_preview(expected[n])}) is missing")
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path} is {_kind(actual)}, expected a dict"
        missing = [k for k in expected if k not in actual]
        if missing:
            key = missing[0]
            return (f"{path} has no entry {_preview(key)} "
                    f"(expected {path}[{_preview(key)}] = {_preview(expected[key])}); "
                    f"{len(missing)} of {len(expected)} entries are missing")
        extra = [k for k in actual if k not in expected]
        if extra:
            key = extra[0]
            return (f"{path} has an entry {_preview(key)} (= {_preview(actual[key])}) that should not be there; "
                    f"{len(extra)} such entr{'y' if len(extra) == 1 else 'ies'}")
        for key, e in expected.items():
            problem = _plain_difference(actual[key], e, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    try:
        equal = bool(actual == expected)
    except Exception:  # noqa: BLE001 - e.g. a tensor of several numbers: not equal to a scalar
        equal = False
    return None if equal else f"{path} is {_preview(actual)}, expected {_preview(expected)}"


def plain_mismatch(actual: Any, expected: Any, *, name: str, what: str) -> str | None:
    """Why the plain value ``actual`` (a list, dict, ...) is not ``expected``, or None if equal.

    ``name`` is the output's name, used to write the place of the first difference the way a
    student indexes it (``ids[3] is 259, expected 257``); ``what`` says where it came from.
    """
    problem = _plain_difference(actual, expected, name)
    if problem is None:
        return None
    return f"{what}: {problem} (got {_preview(actual)}, expected {_preview(expected)})"


# (function, label of a visible call, what the student's function returned on it): lets a failed
# visible check name the typical mistake whose recorded outputs on that call are the same.
Seen = tuple[str, str, tuple]


def fail(problem: str, hint: str = "", seen: Seen | None = None) -> NoReturn:
    """Raise ExerciseFailure for ``problem``: with the likely mistake when the student's outputs in
    ``seen`` are those a typical mistake gave on the same visible input (recorded by the grader
    side, see :mod:`.recorded`), else with ``hint``. So a student learns the likely mistake in the
    notebook already, not only from the grader."""
    __tracebackhide__ = True
    from .recorded import recorded_mistake  # (it reads the registry, which imports this module)

    likely = recorded_mistake(*seen) if seen else None
    if likely:
        raise ExerciseFailure(f"{problem}.\n  Likely mistake: {likely}")
    raise ExerciseFailure(problem + (f".\n  Hint: {hint}" if hint else "."))


def expect_close(
    actual: torch.Tensor,
    expected: Any,
    *,
    what: str,
    hint: str = "",
    rtol: float = 1e-3,
    atol: float = 1e-3,
    seen: Seen | None = None,
) -> None:
    """Raise ExerciseFailure unless ``actual`` is close to ``expected`` (for worked examples); the
    message names the likely mistake when ``seen`` shows one (see :func:`fail`)."""
    __tracebackhide__ = True
    expected = torch.as_tensor(expected, dtype=torch.float64)
    problem = mismatch(actual, expected, what=what, rtol=rtol, atol=atol)
    if problem:
        fail(problem, hint, seen)


def expect_equal(actual: Any, expected: Any, *, name: str, what: str, hint: str = "",
                 seen: Seen | None = None) -> None:
    """Raise ExerciseFailure unless the plain value ``actual`` (a list, dict, ...) equals
    ``expected``; the message names the first difference, and the likely mistake (see :func:`fail`)."""
    __tracebackhide__ = True
    problem = plain_mismatch(actual, expected, name=name, what=what)
    if problem:
        fail(problem, hint, seen)


def expect_sums_to_one(weights: torch.Tensor, dim: int, what: str, hint: str) -> None:
    """Raise with the first slice along ``dim`` that does not sum to 1 (for weights)."""
    __tracebackhide__ = True
    sums = weights.detach().to(torch.float64).sum(dim=dim)
    bad = ~torch.isclose(sums, torch.ones_like(sums), atol=1e-4, rtol=0) | sums.isnan()
    if bad.any():
        index = tuple(bad.nonzero()[0].tolist())
        raise ExerciseFailure(
            f"{what}: row {fmt_index(index)} does not sum to 1 (sum = "
            f"{fmt_number(sums[index].item())}).\n  Hint: {hint}"
        )
