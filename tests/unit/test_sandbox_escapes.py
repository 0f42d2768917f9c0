"""Escapes past the sandbox's name layer, its reply protocol and its kernel layer.

The adversarial tester's report: a class pattern whose `__match_args__` names a dunder
attribute read any attribute by name, reached the real builtins and `os`, and from there
calls that raise no audit event (`os.stat`, `readlink`, `getcwd`, `memfd_create`) worked
and the code wrote its own reply to the parent. Each class is tested here: every way an
attribute name is spelled meets the name check; what the code writes on the reply channel
is never trusted beyond what the code could do anyway; and with the name layer switched
off, the kernel still refuses what the audit hook does not see.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

import lmdsl
from lmdsl import program_of_thought
from lmdsl.errors import (
    LMDSLError,
    OutputError,
    SandboxCodeError,
    SandboxCrash,
    SandboxError,
    SandboxInputError,
    SandboxOutputError,
    SandboxTimeout,
    SandboxViolation,
)
from lmdsl.sandbox.parent import _kernel_confinement, _run_code

# healthy_parent: the autouse fixture that checks no child or temporary directory is left behind
from tests.unit.test_sandbox import OS_GLOBALS, SMALL, healthy_parent, limits, violation  # noqa: F401

# The reported bypass: a metaclass whose isinstance() says yes, and `__match_args__`
# naming `__self__`, read from `print`: the real builtins module, then `__import__` and os.
MATCH_BYPASS = (
    "class Yes(type):\n"
    "    def __instancecheck__(cls, obj):\n"
    "        return True\n"
    "class P(metaclass=Yes):\n"
    "    __match_args__ = ('__self__',)\n"
    "match print:\n"
    "    case P(b):\n"
    "        os = b.__import__('os')\n"
    "result = str(os.stat('/etc/shadow'))\n"
)


def run(code: str, **changes: Any) -> Any:
    return _run_code(code, None, limits(**changes)).value


def require_kernel_layer() -> None:
    note = _kernel_confinement()
    if note:
        pytest.skip(f"no kernel confinement on this machine: {note}")


# -- the name layer: class patterns ----------------------------------------------------------


def test_the_reported_match_bypass_is_a_violation() -> None:
    violation(MATCH_BYPASS)
    # Without a name the source check can see, the match itself is refused when it runs.
    quiet = MATCH_BYPASS.replace("os = b.__import__('os')", "got = b")
    quiet = quiet.replace("str(os.stat('/etc/shadow'))", "str(got)")
    assert "'__self__' is not allowed" in str(violation(quiet))


@pytest.mark.parametrize(
    "match_args",
    [
        "('__glo' + 'bals__',)",  # computed at run time: no string in the source to see
        "tuple(['__self__'])",
        "('x', '__self__')",  # a later position
        "('__self__', 1)",  # CPython checks the elements one by one: the first is looked up
    ],
)
def test_match_args_naming_an_internal_attribute_are_refused_when_the_pattern_runs(match_args: str) -> None:
    code = (
        "class Yes(type):\n"
        "    def __instancecheck__(cls, obj):\n"
        "        return True\n"
        f"class P(metaclass=Yes):\n    __match_args__ = {match_args}\n"
        "def f():\n    pass\n"
        "match f:\n"
        "    case P(a) | P(a, _):\n"
        "        result = str(a)\n"
    )
    violation(code)


@pytest.mark.parametrize(
    "code",
    [
        # The class built by type() and a metaclass made by type(): no class statement.
        "Yes = type('Yes', (type,), {'__instancecheck__': lambda c, o: True})\n"
        "P = Yes('P', (), {'__match_args__': ('__cl' + 'osure__',)})\n"
        "match getattr:\n    case P(c):\n        result = str(c)\n",
        # The match statement in a class body, where names are looked up in the class namespace.
        "class Yes(type):\n    def __instancecheck__(cls, obj):\n        return True\n"
        "class P(metaclass=Yes):\n    __match_args__ = ('__self__',)\n"
        "class Q:\n    match print:\n        case P(b):\n            got = str(b)\n"
        "result = Q.got\n",
        # Nested in a sequence pattern and in a mapping pattern.
        "class Yes(type):\n    def __instancecheck__(cls, obj):\n        return True\n"
        "class P(metaclass=Yes):\n    __match_args__ = ('__self__',)\n"
        "match [print]:\n    case [P(b)]:\n        result = str(b)\n",
        "class Yes(type):\n    def __instancecheck__(cls, obj):\n        return True\n"
        "class P(metaclass=Yes):\n    __match_args__ = ('__self__',)\n"
        "match {'k': print}:\n    case {'k': P(b)}:\n        result = str(b)\n",
        # A class body whose metaclass's __prepare__ answers every name, the helpers' too.
        "class NS(dict):\n"
        "    def __getitem__(self, key):\n"
        "        return (lambda *a: print) if key.startswith('<') else dict.__getitem__(self, key)\n"
        "class Meta(type):\n    @classmethod\n    def __prepare__(mcs, name, bases):\n        return NS()\n"
        "class Yes(type):\n    def __instancecheck__(cls, obj):\n        return True\n"
        "class P(metaclass=Yes):\n    __match_args__ = ('__self__',)\n"
        "class C(metaclass=Meta):\n    match print:\n        case P(b):\n            got = str(b)\n"
        "result = C.got\n",
        # Keyword patterns name the attribute in the source.
        "match print:\n    case object(__self__=b):\n        result = str(b)\n",
    ],
)
def test_class_pattern_variants_are_refused(code: str) -> None:
    violation(code)


def test_match_args_are_read_once_so_a_metaclass_cannot_answer_twice() -> None:
    # The first answer is checked and frozen; the second (malicious) one is never asked for.
    code = (
        "calls = []\n"
        "class Yes(type):\n"
        "    def __instancecheck__(cls, obj):\n"
        "        return True\n"
        "    @property\n"
        "    def __match_args__(cls):\n"
        "        calls.append(1)\n"
        "        return ('real',) if len(calls) == 1 else ('__self__',)\n"
        "class P(metaclass=Yes):\n"
        "    pass\n"
        "got = None\n"
        "match 1.5:\n"
        "    case P(r):\n"
        "        got = r\n"
        "result = [got, len(calls)]\n"
    )
    assert run(code) == [1.5, 1]


def test_match_args_are_read_only_when_the_class_matches_as_in_python() -> None:
    code = (
        "class Boom(type):\n"
        "    @property\n"
        "    def __match_args__(cls):\n"
        "        raise ValueError('asked')\n"
        "class P(metaclass=Boom):\n"
        "    pass\n"
        "match 1:\n"
        "    case P(x):\n"
        "        got = 'matched'\n"
        "    case _:\n"
        "        got = 'not asked'\n"
        "result = got\n"
    )
    assert run(code) == "not asked"


def test_ordinary_pattern_matching_still_works() -> None:
    code = (
        "class Point:\n"
        "    __match_args__ = ('x', 'y')\n"
        "    def __init__(self, x, y):\n"
        "        self.x, self.y = x, y\n"
        "class MyInt(int):\n"
        "    pass\n"
        "def where(p):\n"
        "    match p:\n"
        "        case Point(0, y):\n"
        "            return f'on the y axis at {y}'\n"
        "        case Point(x, 0) if x > 0:\n"
        "            return 'on the positive x axis'\n"
        "        case Point(x=x, y=y):\n"
        "            return [x, y]\n"
        "        case [Point(a, b), *rest]:\n"
        "            return ['list', a, b, len(rest)]\n"
        "        case {'k': Point(a, _)}:\n"
        "            return ['dict', a]\n"
        "        case MyInt(m):\n"
        "            return ['myint', m]\n"
        "        case int(n) | float(n):\n"
        "            return ['number', n]\n"
        "        case str() as s:\n"
        "            return ['str', s]\n"
        "class InBody:\n"
        "    match 3:\n"
        "        case int(v):\n"
        "            found = v\n"
        "result = [where(Point(0, 5)), where(Point(2, 0)), where(Point(1, 1)), where([Point(1, 2), 3]),\n"
        "          where({'k': Point(7, 8)}), where(MyInt(4)), where(2.5), where('s'), InBody.found]\n"
    )
    assert run(code) == [
        "on the y axis at 5",
        "on the positive x axis",
        [1, 1],
        ["list", 1, 2, 1],
        ["dict", 7],
        ["myint", 4],
        ["number", 2.5],
        ["str", "s"],
        3,
    ]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("class P:\n    __match_args__ = ('a',)\nmatch P():\n    case P(a, b):\n        pass", "accepts 1 positional"),
        ("x = len\nmatch 1:\n    case x(y):\n        pass", "must be a type"),
        ("class P:\n    __match_args__ = ['a']\nmatch P():\n    case P(a):\n        pass", "must be a tuple"),
    ],
)
def test_bad_class_patterns_fail_as_in_python(code: str, message: str) -> None:
    with pytest.raises(SandboxCodeError, match=message):
        run(code + "\nresult = 1")


# -- the name layer: format strings ------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "result = '{0.__self__}'.format(print)",
        "result = '{p.__self__}'.format_map({'p': print})",
        "result = '{0:{1.__globals__}}'.format(1, lambda: 0)",  # a field nested in the format spec
        "result = '{0.__self__}{'.format(print)",  # malformed after the lookup: it happens first
        "result = str.format('{0.__self__}', print)",
        "result = getattr('{0.__self__}', 'form' + 'at')(print)",
        "result = list(map(str.format, ['{0.__self__}'], [print]))",
        "import operator\nresult = operator.methodcaller('format', print)('{0.__self__}')",
        "import operator\nresult = operator.attrgetter('format')('{0.__self__}')(print)",
        "class S(str):\n    def format(self, *a):\n        return super().format(*a)\n"
        "result = S('{0.__self__}').format(print)",
        "class C:\n    got = '{0.__self__}'.format(print)\nresult = C.got",
        # A class body whose metaclass's __prepare__ answers for the format helper.
        "class NS(dict):\n"
        "    def __getitem__(self, key):\n"
        "        return (lambda o, n: str.upper) if key.startswith('<') else dict.__getitem__(self, key)\n"
        "class Meta(type):\n    @classmethod\n    def __prepare__(mcs, name, bases):\n        return NS()\n"
        "class C(metaclass=Meta):\n    got = '{0.__self__}'.format(print)\nresult = C.got",
        "import string\nresult = string.Formatter().get_field('0.format', ['{0.__self__}'], {})[0](print)",
        "import functools\nclass W:\n    pass\nw = W()\n"
        "functools.update_wrapper(w, '{0.__self__}', assigned=('format',))\n"
        "result = w.format(print)",
        # Where the bound method itself would reach the code unchecked: refused in the source.
        "f = '{0.__self__}'\nclass E:\n    def __eq__(self, o):\n        return True\n"
        "match E():\n    case f.format:\n        pass",
        "class O:\n    pass\no = O()\no.format += 1",
        "match 's':\n    case str(format=f):\n        result = f",
    ],
)
def test_format_fields_that_name_internal_attributes_are_refused(code: str) -> None:
    violation(code)


def test_the_sandboxs_own_importer_is_still_callable_by_name() -> None:
    assert run("result = __import__('math').sqrt(16)") == 4.0


def test_ordinary_formatting_still_works() -> None:
    code = (
        "import string\n"
        "fmt = '{0:>5}|{0.real}|{x[0]}|{y:{w}}'\n"
        "result = [fmt.format(3, x=[9], y=2, w='03'), '{a}'.format_map({'a': 1}), f'{3:03d}',\n"
        "          string.Formatter().format('{0.imag}', 2), str.format('{}-{}', 1, 2),\n"
        "          list(map('<{}>'.format, 'ab'))]\n"
    )
    assert run(code) == ["    3|3|9|002", "1", "003", "0", "1-2", ["<a>", "<b>"]]


# -- the name layer: typing, functools and other readers by name -------------------------------


@pytest.mark.parametrize(
    "code",
    [
        # ForwardRef.evaluate in a fresh dict: eval() would add the real builtins.
        "import typing\nv = typing.ForwardRef('vars')._evaluate({}, None, frozenset())\nresult = str(v(len))",
        "import typing\ndef f(x: 'vars'):\n    pass\nresult = str(typing.get_type_hints(f, globalns={})['x'](f))",
        # Another module's namespace: by `module=`, or by a class's `__module__`.
        "import typing\nresult = str(typing.ForwardRef('vars', module='builtins')._evaluate(None, None, frozenset()))",
        "import typing, json\nclass X:\n    __module__ = 'json'\n    a: 'codecs'\n"
        "result = str(typing.get_type_hints(X))",
        "import typing\nclass D(dict):\n    pass\n"
        "result = str(typing.ForwardRef('vars')._evaluate(D(), None, frozenset()))",
        # update_wrapper copies the attributes its caller names.
        "import functools\nclass W:\n    pass\nfunctools.update_wrapper(W(), print, assigned=('__self__',))",
        "import functools\nclass W:\n    pass\n"
        "functools.update_wrapper(W(), print, assigned=(), updated=('__globals__',))",
        # Generic readers of attributes and namespaces.
        "result = str(object.__getstate__(type(lambda: 0)))",
        "import typing\nA = type(typing.List[int])\nresult = str(A(iter([]), (int,)).__getattr__('mro'))",
        "result = object.__getattribute__(print, '__self__')",
        "result = str(type.__dict__)",
        "result = str(vars(type(lambda: 0)))",
        "result = str(__builtins__['getattr'])",
        # Names the code may not bind: a class of its own with these would fool library readers.
        "class W:\n    __dict__ = property(lambda self: {})\nresult = 1",
        "def f(__globals__):\n    pass\nresult = 1",
        "result = dict(__dict__=1)",
        "try:\n    pass\nexcept Exception as __traceback__:\n    pass\nresult = 1",
    ],
)
def test_other_routes_to_an_attribute_by_name_are_refused(code: str) -> None:
    violation(code)


def test_lru_cache_of_a_class_does_not_leak_its_namespace() -> None:
    # The real update_wrapper merged the wrapped class's __dict__ (with the descriptors for
    # __globals__ and __code__) into the wrapper, from where copy() handed it to the code.
    code = (
        "import functools, copy\n"
        "cached = functools.lru_cache(type(lambda: 0))\n"
        "class Grab:\n"
        "    def __setstate__(self, state):\n"
        "        self.state = state\n"
        "g = Grab()\n"
        "functools.update_wrapper(g, cached)\n"
        "result = sorted(copy.copy(g).state)\n"
    )
    names = run(code)
    assert "__globals__" not in names and "__code__" not in names


def test_typing_and_functools_still_work_for_the_codes_own_objects() -> None:
    code = (
        "from __future__ import annotations\n"
        "import functools, typing\n"
        "class A:\n"
        "    x: int\n"
        "    child: list[A]\n"
        "def deco(f):\n"
        "    @functools.wraps(f)\n"
        "    def inner(*args):\n"
        "        return f(*args)\n"
        "    return inner\n"
        "@deco\n"
        "def g(a: A) -> int:\n"
        "    'doc'\n"
        "    return 1\n"
        "@functools.singledispatch\n"
        "def kind(x):\n"
        "    return 'other'\n"
        "@kind.register\n"
        "def _(x: int):\n"
        "    return 'int'\n"
        "result = [str(typing.get_type_hints(A)), str(typing.get_type_hints(g)), g.__name__, g.__doc__,\n"
        "          kind(1), kind('a'), typing.get_type_hints(g, globalns={'A': int})['a'].__name__]\n"
    )
    assert run(code) == [
        "{'x': <class 'int'>, 'child': list[__main__.A]}",
        "{'a': <class '__main__.A'>, 'return': <class 'int'>}",
        "g",
        "doc",
        "int",
        "other",
        "int",
    ]


# -- the reply channel -------------------------------------------------------------------------

# A fully compromised child (the name layer off, the real os): it writes `data` to every
# descriptor it may hold, the reply channel among them, and may leave with os._exit().
FORGE = OS_GLOBALS + (
    "def forge(data):\n"
    "    for fd in range(3, 16):\n"
    "        try:\n"
    "            g['write'](fd, data)\n"
    "        except OSError:\n"
    "            pass\n"
    "def leave(status):\n"
    "    g['_exit'](status)\n"
)


def compromised(code: str, **changes: Any) -> Any:
    return _run_code(FORGE + code, None, limits(**changes), name_checks=False).value


def reply(kind: str, **fields: Any) -> str:
    return repr(json.dumps({"kind": kind, **fields}).encode() + b"\n")


@pytest.mark.parametrize(
    ("code", "expected", "message"),
    [
        (f"forge({reply('setup', message='pwned')})\nleave(0)", SandboxViolation, "reply channel"),
        (f"forge({reply('ready', confined=True, note='')})\nleave(0)", SandboxViolation, "reply channel"),
        (f"forge({reply('ok', value='1', stdout='')})\nresult = 2", SandboxViolation, "exactly one reply"),
        ("forge(b'\\x00\\xff not json')\nleave(0)", SandboxViolation, "reply channel"),
        (f"forge({reply('ok', value=1, stdout='')})\nleave(0)", SandboxViolation, "wrong type"),
        (f"forge({reply('ok', value='1', stdout='', extra=1)})\nleave(0)", SandboxViolation, "wrong fields"),
        (f"forge({reply('internal', message='x')})\nleave(0)", SandboxViolation, "runner"),
        (f"forge({reply('ok', value='NaN', stdout='')})\nleave(0)", SandboxOutputError, "read back"),
        (f"forge({reply('ok', value=json.dumps('x' * 500_000), stdout='')})\nleave(0)", SandboxOutputError, "large"),
        ("leave(0)", SandboxOutputError, "without reporting"),
        ("leave(3)", SandboxOutputError, "status 3"),
    ],
)
def test_what_the_code_writes_on_the_reply_channel_is_checked_by_the_parent(
    code: str, expected: type[SandboxError], message: str
) -> None:
    with pytest.raises(SandboxError) as caught:
        compromised(code, output_bytes=64 * 1024)
    assert type(caught.value) is expected, caught.value
    assert message in str(caught.value)


def test_a_forged_reply_is_no_more_than_setting_result_and_the_output_limit_holds() -> None:
    big = "y" * 300_000
    out = _run_code(FORGE + f"forge({reply('ok', value='41', stdout=big)})\nleave(0)", None, SMALL, name_checks=False)
    assert out.value == 41
    assert len(out.stdout.encode()) < SMALL.output_bytes + 100
    assert out.stdout.endswith(f"[output truncated after {SMALL.output_bytes} bytes]\n")


def test_a_forged_reply_does_not_end_the_run_early() -> None:
    # The parent waits for the child to end; the code cannot make it take a reply and leave.
    with pytest.raises(SandboxTimeout):
        compromised(f"forge({reply('ok', value='1', stdout='')})\nwhile True:\n    pass", wall_seconds=0.5)


def test_the_child_never_raises_the_callers_input_error() -> None:
    # A forged set-up failure was SandboxInputError, which escaped program_of_thought.
    with pytest.raises(SandboxViolation) as caught:
        compromised(f"forge({reply('setup', message='pwned')})\nleave(0)")
    assert not isinstance(caught.value, SandboxInputError)
    # The model's code, with os allowed: the forged line and the runner's reply are two messages.
    forged_setup = (
        "import os, json\n"
        "for fd in range(3, 16):\n"
        "    try:\n"
        f"        os.write(fd, {reply('setup', message='pwned')})\n"
        "    except OSError:\n"
        "        pass\n"
        "result = 42\n"
    )

    strategy = program_of_thought(attempts=2, limits=limits(modules={"os"}))

    @lmdsl.fuzzy(strategy=strategy)
    def answer(question: str) -> int:
        """Answer the question."""

    model = lmdsl.ScriptedModel([{"code": forged_setup}] * 2)
    with lmdsl.using(model=model), pytest.raises(OutputError) as failed:
        answer("what is six times seven?")
    errors = [attempt.error for attempt in failed.value.attempts if attempt.error]
    assert len(errors) == 2 and all("reply channel" in error for error in errors)


# -- the kernel layer ---------------------------------------------------------------------------


@pytest.mark.parametrize("audit_hook", [True, False])
def test_stat_outside_the_sandbox_is_refused_even_past_the_name_layer(audit_hook: bool) -> None:
    require_kernel_layer()
    code = OS_GLOBALS + "result = str(g['stat']('/etc/shadow'))"
    with pytest.raises(SandboxCodeError) as caught:
        _run_code(code, None, SMALL, name_checks=False, audit_hook=audit_hook)
    assert caught.value.type_name == "PermissionError"
    assert "Operation not permitted" in caught.value.detail
    # The same program without the kernel layer: os.stat raises no audit event, so it works.
    assert "st_mode" in _run_code(code, None, SMALL, name_checks=False, kernel=False).value


def test_the_reported_bypass_itself_is_refused_by_the_kernel_when_the_names_are_not_checked() -> None:
    require_kernel_layer()
    with pytest.raises(SandboxCodeError, match="PermissionError"):
        _run_code(MATCH_BYPASS, None, SMALL, name_checks=False)


@pytest.mark.parametrize(
    "call",
    [
        "g['readlink']('/proc/self/exe')",
        "g['getcwd']()",
        "g['memfd_create']('x')",
        "g['listdir']('/')",
        "g['open']('/etc/hostname', 0)",
        "g['pipe']()",
        "g['fork']()",
        "g['dup'](2)",
    ],
)
def test_calls_the_audit_hook_does_not_see_are_refused_by_the_kernel(call: str) -> None:
    require_kernel_layer()
    with pytest.raises(SandboxCodeError) as caught:
        _run_code(OS_GLOBALS + f"result = str({call})", None, SMALL, name_checks=False, audit_hook=False)
    assert caught.value.type_name == "PermissionError"
    assert "Operation not permitted" in caught.value.detail


def test_sockets_are_refused_by_the_kernel_even_with_the_module_allowed() -> None:
    require_kernel_layer()
    code = "import socket\nresult = str(socket.socket())"
    with pytest.raises(SandboxCodeError, match="PermissionError"):
        _run_code(code, None, limits(modules={"socket"}), name_checks=False, audit_hook=False)


def test_the_parent_pid_is_not_available_to_the_code() -> None:
    require_kernel_layer()
    out = _run_code(OS_GLOBALS + "result = g['getppid']()", None, SMALL, name_checks=False)
    assert out.value == -1 and out.value != os.getpid()


# -- a process killed by a signal -------------------------------------------------------------


def test_a_segmentation_fault_is_a_typed_crash() -> None:
    code = "import ctypes\nctypes.string_at(0)"
    with pytest.raises(SandboxCrash) as caught:
        _run_code(code, None, limits(modules={"ctypes"}), audit_hook=False)
    error = caught.value
    assert (error.signal_number, error.signal_name) == (signal.SIGSEGV, "SIGSEGV")
    assert "SIGSEGV" in str(error)
    assert isinstance(error, SandboxError) and isinstance(error, LMDSLError)


def test_an_abort_is_a_typed_crash() -> None:
    code = OS_GLOBALS + "g['abort']()"
    with pytest.raises(SandboxCrash) as caught:
        _run_code(code, None, SMALL, name_checks=False, audit_hook=False, kernel=False)
    assert caught.value.signal_name == "SIGABRT"
    # With the kernel layer the abort cannot signal itself and ends in SIGSEGV: still a crash.
    with pytest.raises(SandboxCrash):
        _run_code(code, None, SMALL, name_checks=False, audit_hook=False)
