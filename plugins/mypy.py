"""The mypy plugin: lmdsl's rules as red lines in the editor.

Enable it in the mypy configuration (`pyproject.toml`):

    [tool.mypy]
    plugins = ["lmdsl.plugins.mypy"]

It reports, each under its own error code (disable one with
`disable_error_code = ["lmdsl-docstring"]`):

- `lmdsl-docstring`: a fuzzy function without a docstring;
- `lmdsl-signature`: an unannotated parameter or return type, `*args`/`**kwargs`;
- `lmdsl-serializable`: an input or output type lmdsl cannot put in a prompt and parse back;
- `lmdsl-wiring`: an `ensure` check that does not fit its fuzzy function, a metric whose
  prediction parameter does not take the program's output, a trainset `Example` without
  one of the program's parameters, a `react` tool without annotations.

The rules and messages are `lmdsl.rules`, the same ones decoration time and
`lmdsl check` apply. mypy has no hook for function decorators; a function hook on the
decorator fires when mypy applies it, with the `Decorator` node as context. Every hook
returns mypy's own inferred type: the plugin reports, it never changes types.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mypy.errorcodes import ErrorCode
from mypy.nodes import (
    ARG_NAMED,
    ARG_POS,
    ARG_STAR,
    ARG_STAR2,
    AssignmentStmt,
    CallExpr,
    Context,
    Decorator,
    Expression,
    ExpressionStmt,
    FuncDef,
    ListExpr,
    MemberExpr,
    MypyFile,
    NameExpr,
    OverloadedFuncDef,
    RefExpr,
    StrExpr,
    SymbolNode,
    SymbolTableNode,
    TupleExpr,
    TypeInfo,
)
from mypy.plugin import CheckerPluginInterface, FunctionContext, MethodContext, Plugin, ReportConfigContext
from mypy.subtypes import is_subtype
from mypy.types import (
    AnyType,
    CallableType,
    Instance,
    LiteralType,
    NoneType,
    Overloaded,
    Parameters,
    ProperType,
    TupleType,
    Type,
    TypedDictType,
    TypeOfAny,
    UnionType,
    get_proper_type,
)

from lmdsl import rules

CODES = {code: ErrorCode(code, description, "lmdsl") for code, description in rules.CODES.items()}

# The hooks start from the names users import (`lmdsl.fuzzy`, `lmdsl.FuzzyFunction`...), never
# from internal module paths: the targets are looked up in mypy's own symbol tables, and the
# decorator classes are found as the return types of those functions. Moving code inside lmdsl
# cannot turn a check off; a public name that stops having the expected shape is an error.
PUBLIC_FUZZY = "lmdsl.fuzzy"
PUBLIC_FUZZY_FUNCTION = "lmdsl.FuzzyFunction"
PUBLIC_REACT = "lmdsl.react"
PUBLIC_OPTIMIZE = "lmdsl.optimize"
PUBLIC_EXAMPLE = "lmdsl.Example"
BASE_MODEL = "pydantic.main.BaseModel"
SCALARS = frozenset({"builtins.str", "builtins.int", "builtins.float", "builtins.bool"})
UNSEEN = frozenset(
    {TypeOfAny.from_error, TypeOfAny.from_unimported_type, TypeOfAny.special_form, TypeOfAny.implementation_artifact}
)


@dataclass(frozen=True)
class Targets:
    """The fully qualified names mypy reports for lmdsl's decorators, resolved from public names."""

    fuzzy: str
    fuzzy_decorator: str
    ensure: str
    ensure_decorator: str
    react: str
    optimize: str
    optimization: str
    example: str


def resolve_targets(lookup: Callable[[str], SymbolTableNode | None]) -> Targets | None:
    """The targets, or None when lmdsl is not part of this mypy run."""
    if lookup(PUBLIC_FUZZY) is None:
        return None
    fuzzy, fuzzy_function = _node(lookup, PUBLIC_FUZZY), _node(lookup, PUBLIC_FUZZY_FUNCTION)
    optimize = _node(lookup, PUBLIC_OPTIMIZE)
    if not isinstance(fuzzy_function, TypeInfo):
        raise _shape_error(PUBLIC_FUZZY_FUNCTION, "a class")
    ensure = fuzzy_function.get_method("ensure")
    if ensure is None:
        raise _shape_error(PUBLIC_FUZZY_FUNCTION, "a class with an ensure method")
    return Targets(
        fuzzy=fuzzy.fullname,
        fuzzy_decorator=_returned_call(fuzzy, PUBLIC_FUZZY),
        ensure=ensure.fullname,
        ensure_decorator=_returned_call(ensure, f"{PUBLIC_FUZZY_FUNCTION}.ensure"),
        react=_node(lookup, PUBLIC_REACT).fullname,
        optimize=optimize.fullname,
        optimization=_returned_call(optimize, PUBLIC_OPTIMIZE),
        example=_node(lookup, PUBLIC_EXAMPLE).fullname,
    )


def _node(lookup: Callable[[str], SymbolTableNode | None], public: str) -> SymbolNode:
    found = lookup(public)
    if found is None or found.node is None:
        raise _shape_error(public, "a name lmdsl exports")
    return found.node


def _returned_call(node: object, public: str) -> str:
    """`Decorator.__call__` for the decorator class one of `node`'s overloads returns."""
    function = node.func if isinstance(node, Decorator) else node
    signatures = (
        function.type.items if isinstance(function, OverloadedFuncDef) and isinstance(function.type, Overloaded) else []
    )
    if isinstance(function, FuncDef) and isinstance(function.type, CallableType):
        signatures = [function.type]
    options_forms = [s for s in signatures if ARG_POS not in s.arg_kinds]  # `@decorator(option=...)`
    for signature in options_forms or signatures:
        returned = get_proper_type(signature.ret_type)
        if isinstance(returned, Instance) and returned.type.get_method("__call__") is not None:
            return f"{returned.type.fullname}.__call__"
    raise _shape_error(public, "a function one of whose forms returns a decorator object")


def _shape_error(public: str, expected: str) -> RuntimeError:
    return RuntimeError(f"lmdsl's mypy plugin expected {public} to be {expected}; update plugins/mypy.py")


# mypy re-checks cached modules when a plugin's own file changes, not the files it imports: the
# rule table's digest, reported per module, makes a kept .mypy_cache follow the rules too.
_RULES_DIGEST = hashlib.sha256(Path(rules.__file__).read_bytes()).hexdigest()


class LmdslPlugin(Plugin):
    _resolved: Targets | None = None

    def report_config_data(self, ctx: ReportConfigContext) -> str:
        return _RULES_DIGEST

    @property
    def targets(self) -> Targets | None:
        """Resolved on the first hook after lmdsl's own modules are analysed (kept from then on)."""
        if self._resolved is None:
            self._resolved = resolve_targets(self.lookup_fully_qualified)
        return self._resolved

    def get_function_hook(self, fullname: str) -> Callable[[FunctionContext], Type] | None:
        targets = self.targets if fullname.startswith("lmdsl") else None
        if targets is None:
            return None
        if fullname == targets.fuzzy:
            return _fuzzy
        if fullname == targets.react:
            return _react
        return None

    def get_method_hook(self, fullname: str) -> Callable[[MethodContext], Type] | None:
        targets = self.targets if fullname.startswith("lmdsl") else None
        if targets is None:
            return None
        if fullname == targets.fuzzy_decorator:
            return _fuzzy
        if fullname in (targets.ensure, targets.ensure_decorator):
            return _ensure
        if fullname == targets.optimization:
            return partial(_optimization, targets)
        return None


def plugin(version: str) -> type[Plugin]:
    return LmdslPlugin


def _fail(api: CheckerPluginInterface, message: str, where: Context, code: str) -> None:
    api.fail(message, where, code=CODES[code])


def _name(api: CheckerPluginInterface, typ: Type) -> str:
    try:
        from mypy.messages import format_type_bare

        return format_type_bare(typ, api.options)
    except Exception:  # an internal helper; a plainer name beats a crash
        return str(typ)


def _any_of(typ: Type, kind: int) -> bool:
    proper = get_proper_type(typ)
    return isinstance(proper, AnyType) and proper.type_of_any == kind


def _unannotated(typ: Type) -> bool:
    return _any_of(typ, TypeOfAny.unannotated)


# -- fuzzy functions: docstring, signature, serializable ------------------------------------------


def _fuzzy(ctx: FunctionContext | MethodContext) -> Type:
    function = _decorated_function(ctx)
    if function is not None:
        _check_fuzzy(ctx.api, function)
    return ctx.default_return_type


def _decorated_function(ctx: FunctionContext | MethodContext) -> FuncDef | None:
    if isinstance(ctx.context, Decorator):
        return ctx.context.func
    if ctx.args and ctx.args[0]:  # fuzzy(f) called directly
        node = ctx.args[0][0]
        target = node.node if isinstance(node, RefExpr) else None
        if isinstance(target, Decorator):
            return target.func
        if isinstance(target, FuncDef):
            return target
    return None


def _check_fuzzy(api: CheckerPluginInterface, function: FuncDef) -> None:
    name = function.name
    if not _docstring(function):
        _fail(api, rules.missing_docstring(name), function, rules.DOCSTRING)
    signature = function.type if isinstance(function.type, CallableType) else None
    for index, argument in enumerate(function.arguments):
        parameter = argument.variable.name
        kind = argument.kind
        if kind in (ARG_STAR, ARG_STAR2):
            _fail(
                api, rules.star_parameter(name, "*" if kind == ARG_STAR else "**", parameter), function, rules.SIGNATURE
            )
            continue
        annotation = signature.arg_types[index] if signature is not None else None
        if annotation is None or _unannotated(annotation):
            _fail(api, rules.unannotated_parameter(name, parameter), function, rules.SIGNATURE)
            continue
        _check_serializable(api, function, f"parameter {parameter!r}", annotation, allow_none=True)
    if signature is None or _unannotated(signature.ret_type):
        _fail(api, rules.unannotated_return(name), function, rules.SIGNATURE)
    else:
        _check_serializable(api, function, "the return type", signature.ret_type, allow_none=False)


def _docstring(function: FuncDef) -> bool:
    # FuncDef.docstring is only filled in for stubgen; the first statement is the docstring
    body = function.body.body
    first = body[0] if body else None
    return isinstance(first, ExpressionStmt) and isinstance(first.expr, StrExpr) and bool(first.expr.value.strip())


def _check_serializable(
    api: CheckerPluginInterface, function: FuncDef, what: str, annotation: Type, *, allow_none: bool
) -> None:
    reason = rules.unsupported_reason(_shape(api, annotation), allow_none=allow_none)
    if reason:
        _fail(
            api, rules.unserializable(function.name, what, _name(api, annotation), reason), function, rules.SERIALIZABLE
        )


def _shape(api: CheckerPluginInterface, typ: Type) -> rules.Shape:
    """Describe a mypy type for the shared rules (`lmdsl.serializable.shape_of` does it for runtime types)."""
    proper: ProperType = get_proper_type(typ)
    name = _name(api, typ)
    if isinstance(proper, AnyType):
        return rules.Shape("unknown" if proper.type_of_any in UNSEEN else "other", name)
    if isinstance(proper, NoneType):
        return rules.Shape("none", "None")
    if isinstance(proper, LiteralType):
        value = proper.value
        ok = isinstance(value, (str, int, bool)) or proper.is_enum_literal()
        return rules.Shape("literal", name, bad_literal=None if ok else repr(value))
    if isinstance(proper, UnionType):
        return rules.Shape("union", name, tuple(_shape(api, item) for item in proper.items))
    if isinstance(proper, TypedDictType):
        items = proper.items
        return rules.Shape(
            "typeddict",
            proper.fallback.type.name,
            fields=lambda: ((field, _shape(api, item)) for field, item in items.items()),
            identity=proper.fallback.type.fullname,
        )
    if isinstance(proper, TupleType):
        if proper.partial_fallback.type.is_named_tuple:
            return rules.Shape("other", name)
        return rules.Shape("tuple", name, tuple(_shape(api, item) for item in proper.items))
    if isinstance(proper, Instance):
        return _instance_shape(api, proper, name)
    return rules.Shape("other", name)


def _instance_shape(api: CheckerPluginInterface, instance: Instance, name: str) -> rules.Shape:
    info = instance.type
    fullname = info.fullname
    if fullname in SCALARS:
        return rules.Shape("scalar", name)
    if info.is_enum:
        return rules.Shape("enum", name)
    if info.has_base(BASE_MODEL):
        return rules.Shape("model", name)
    if fullname in ("builtins.list", "builtins.dict", "builtins.tuple"):
        args = instance.args
        omitted = all(_any_of(a, TypeOfAny.from_omitted_generics) for a in args)
        short = fullname.removeprefix("builtins.")
        if omitted:
            return rules.Shape("bare", short)
        if short == "dict":
            return rules.Shape("dict", name, (_shape(api, args[0]), _shape(api, args[1])), key_is_str=_str_key(args[0]))
        return rules.Shape(short, name, (_shape(api, args[0]),))  # type: ignore[arg-type]
    return rules.Shape("other", name)


def _str_key(key_type: Type) -> bool:
    key = get_proper_type(key_type)
    if isinstance(key, Instance):
        return key.type.fullname == "builtins.str"
    if isinstance(key, LiteralType):
        return isinstance(key.value, str) and not key.is_enum_literal()
    if isinstance(key, UnionType):
        return all(_str_key(item) for item in key.items)
    return isinstance(key, AnyType) and key.type_of_any in UNSEEN


# -- wiring -------------------------------------------------------------------------------------


def _ensure(ctx: MethodContext) -> Type:
    """`@fn.ensure` and `@fn.ensure(soft=True)`: the check's parameters against `fn`'s inputs and output."""
    owner = ctx.type
    if not isinstance(owner, Instance) or len(owner.args) != 2 or not ctx.arg_types or not ctx.arg_types[0]:
        return ctx.default_return_type
    inputs = get_proper_type(owner.args[0])
    check = get_proper_type(ctx.arg_types[0][0])
    if not isinstance(inputs, Parameters) or not isinstance(check, CallableType):
        return ctx.default_return_type
    function = _fuzzy_name(ctx.context)
    check_name = f"check {check.name or 'check'}".split(" of ")[0]
    where = _check_location(ctx)
    input_names = [n for n in inputs.arg_names if n is not None]
    names_known = not inputs.is_ellipsis_args and len(input_names) == len(inputs.arg_names)
    positional = [i for i, kind in enumerate(check.arg_kinds) if kind.is_positional()]
    if positional:
        first = check.arg_types[positional[0]]
        if not _unannotated(first) and not is_subtype(owner.args[1], first):
            _fail(
                ctx.api,
                rules.check_takes_output(check_name, function, _name(ctx.api, first), _name(ctx.api, owner.args[1])),
                where,
                rules.WIRING,
            )
    if ARG_STAR2 in check.arg_kinds or not names_known:  # takes every input, or fn's input names are unknown
        return ctx.default_return_type
    for index, (parameter, kind) in enumerate(zip(check.arg_names, check.arg_kinds)):
        if positional and index == positional[0]:
            continue
        if parameter is not None and kind in (ARG_POS, ARG_NAMED) and parameter not in input_names:
            _fail(ctx.api, rules.not_an_input(check_name, function, parameter, input_names), where, rules.WIRING)
    return ctx.default_return_type


def _fuzzy_name(context: Context) -> str:
    """The guarded fuzzy function's name, read from the expression `name.ensure`."""
    candidates: list[Expression] = []
    if isinstance(context, Decorator):
        candidates.extend(context.original_decorators)
    elif isinstance(context, CallExpr):
        candidates.append(context.callee)
    for candidate in candidates:
        while isinstance(candidate, CallExpr):
            candidate = candidate.callee
        if (
            isinstance(candidate, MemberExpr)
            and candidate.name == "ensure"
            and isinstance(candidate.expr, (NameExpr, MemberExpr))
        ):
            return candidate.expr.name
    return "the fuzzy function"


def _check_location(ctx: MethodContext) -> Context:
    return ctx.context.func if isinstance(ctx.context, Decorator) else ctx.context


def _optimization(targets: Targets, ctx: MethodContext) -> Type:
    """`@optimize(...)` applied to a program: the metric's prediction type and the trainset's examples."""
    program = get_proper_type(ctx.arg_types[0][0]) if ctx.arg_types and ctx.arg_types[0] else None
    call = _optimize_call(ctx.context, targets.optimize)
    if not isinstance(program, Instance) or len(program.args) != 2 or call is None:
        return ctx.default_return_type
    parameters = get_proper_type(program.args[0])
    output = program.args[1]
    name = ctx.context.func.name if isinstance(ctx.context, Decorator) else "the program"
    arguments = dict(zip(call.arg_names, call.args))
    metric = arguments.get("metric")
    if metric is not None:
        _check_metric(ctx.api, metric, name, output)
    trainset = arguments.get("trainset")
    if trainset is not None and isinstance(parameters, Parameters):
        required = [
            n
            for n, kind in zip(parameters.arg_names, parameters.arg_kinds)
            if n is not None and kind in (ARG_POS, ARG_NAMED)
        ]
        for number, example in enumerate(_example_literals(ctx.api, trainset, targets.example), start=1):
            fields = [n for n in example.arg_names if n is not None]
            if None in example.arg_names:  # positional or **unpacked: not a literal we can read
                continue
            for missing in (n for n in required if n not in fields):
                _fail(ctx.api, rules.example_lacks_input(number, name, missing, fields), example, rules.WIRING)
    return ctx.default_return_type


def _optimize_call(context: Context, optimize: str) -> CallExpr | None:
    if not isinstance(context, Decorator):
        return None
    for decorator in context.original_decorators:
        if (
            isinstance(decorator, CallExpr)
            and isinstance(decorator.callee, RefExpr)
            and decorator.callee.fullname == optimize
        ):
            return decorator
    return None


def _check_metric(api: CheckerPluginInterface, metric: Expression, program: str, output: Type) -> None:
    metric_type = get_proper_type(api.get_expression_type(metric))
    if not isinstance(metric_type, CallableType):
        return
    positional = [t for t, kind in zip(metric_type.arg_types, metric_type.arg_kinds) if kind.is_positional()]
    if len(positional) < 2 or _unannotated(positional[1]):
        return
    if not is_subtype(output, positional[1]):
        metric_name = metric.name if isinstance(metric, (NameExpr, MemberExpr)) else "metric"
        _fail(
            api,
            rules.metric_takes_output(metric_name, program, _name(api, positional[1]), _name(api, output)),
            metric,
            rules.WIRING,
        )


def _example_literals(api: CheckerPluginInterface, expression: Expression, example: str) -> Iterator[CallExpr]:
    """`Example(...)` calls written in a list or tuple, inline or in a module-level variable."""
    if isinstance(expression, NameExpr):
        value = _module_assignment(api, expression)
        if value is None:
            return
        expression = value
    if isinstance(expression, (ListExpr, TupleExpr)):
        for item in expression.items:
            if isinstance(item, CallExpr) and isinstance(item.callee, RefExpr) and item.callee.fullname == example:
                yield item


def _module_assignment(api: CheckerPluginInterface, name: NameExpr) -> Expression | None:
    module_name = name.fullname.rpartition(".")[0] if name.fullname else ""
    modules: dict[str, MypyFile] = getattr(api, "modules", {})
    module = modules.get(module_name)
    if module is None:
        return None
    for statement in module.defs:
        if isinstance(statement, AssignmentStmt) and any(
            isinstance(target, NameExpr) and target.name == name.name for target in statement.lvalues
        ):
            return statement.rvalue
    return None


def _react(ctx: FunctionContext) -> Type:
    """`react([tool, ...])`: every tool's parameters and return type annotated."""
    tools = ctx.args[0][0] if ctx.args and ctx.args[0] else None
    if isinstance(tools, (ListExpr, TupleExpr)):
        for item in tools.items:
            for message in _tool_problems(item):
                _fail(ctx.api, message, item, rules.WIRING)
    return ctx.default_return_type


def _tool_problems(item: Expression) -> Sequence[str]:
    node = item.node if isinstance(item, RefExpr) else None
    function = node.func if isinstance(node, Decorator) else node
    if not isinstance(function, FuncDef):
        return []
    signature = function.type if isinstance(function.type, CallableType) else None
    problems = [
        rules.tool_unannotated(function.name, argument.variable.name)
        for index, argument in enumerate(function.arguments)
        if signature is None or _unannotated(signature.arg_types[index])
    ]
    if signature is None or _unannotated(signature.ret_type):
        problems.append(rules.tool_unannotated(function.name, None))
    return problems
