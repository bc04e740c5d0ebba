"""The part of Go's ``text/template`` (with the sprig functions) that go-ftw runs over ``data``.

go-ftw 2.3.0 parses every ``data`` field as a Go template with sprig's function map and
executes it with no data; when parsing or executing fails it sends **no body at all**. This
module reproduces that for the subset a test file can reasonably use: text, comments, trim
markers, string/raw-string/number/char/bool literals, pipelines, parenthesised pipelines and
a handful of sprig string functions (``repeat`` builds the large bodies of the CRS tests).

Outcomes, as Go has them:

- :class:`TemplateParseError` / :class:`TemplateExecError` — Go would fail; go-ftw sends an
  empty body. A call of a function that sprig does not define is a *parse* error in Go (for
  example ``{{constructor.constructor('alert(1)')()}}``), so it is one here too.
- :class:`TemplateUnsupported` — valid Go, but beyond this subset (a sprig function not
  implemented here, ``if``/``range``, variables). The caller reports it; guessing the output
  would make a test silently send something go-ftw does not.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "TemplateError",
    "TemplateExecError",
    "TemplateParseError",
    "TemplateUnsupported",
    "render_go_template",
]


class TemplateError(ValueError):
    """Base of the template outcomes that are not a rendered body."""


class TemplateParseError(TemplateError):
    """Go's parser rejects the template (go-ftw then sends an empty body)."""


class TemplateExecError(TemplateError):
    """Go's executor fails (go-ftw then sends an empty body)."""


class TemplateUnsupported(TemplateError):
    """Valid for Go, but outside the subset implemented here."""


_NO_VALUE = "<no value>"
_KEYWORDS = frozenset(
    {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}
)
_SPACE = " \t\r\n"


def _repeat(count: object, text: object) -> str:
    if not isinstance(count, int) or isinstance(count, bool):
        raise TemplateExecError(f"repeat: wrong type for count: {type(count).__name__}")
    if count < 0:
        raise TemplateExecError("repeat: negative repeat count")
    return _to_text(text) * count


def _b64dec(text: object) -> str:
    try:
        return base64.b64decode(_to_text(text), validate=True).decode("utf-8", "replace")
    except ValueError as exc:  # sprig returns the error text as the value
        return str(exc)


def _quote(*values: object) -> str:
    return " ".join(
        '"' + _to_text(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values
    )


# Implemented sprig (and builtin) functions: name → (arity or None for variadic, function).
_FUNCTIONS: dict[str, tuple[int | None, Callable[..., object]]] = {
    "repeat": (2, _repeat),
    "upper": (1, lambda s: _to_text(s).upper()),
    "lower": (1, lambda s: _to_text(s).lower()),
    "trim": (1, lambda s: _to_text(s).strip(_SPACE + "\v\f")),
    "trimAll": (2, lambda cut, s: _to_text(s).strip(_to_text(cut))),
    "trimPrefix": (2, lambda p, s: _to_text(s).removeprefix(_to_text(p))),
    "trimSuffix": (2, lambda p, s: _to_text(s).removesuffix(_to_text(p))),
    "replace": (3, lambda old, new, s: _to_text(s).replace(_to_text(old), _to_text(new))),
    "cat": (None, lambda *v: " ".join(_to_text(x) for x in v if x is not None)),
    "quote": (None, _quote),
    "squote": (None, lambda *v: " ".join("'" + _to_text(x) + "'" for x in v)),
    "b64enc": (1, lambda s: base64.b64encode(_to_text(s).encode("utf-8")).decode("ascii")),
    "b64dec": (1, _b64dec),
    "print": (None, lambda *v: "".join(_to_text(x) for x in v)),
    "len": (1, lambda s: len(_to_text(s).encode("utf-8"))),
}

# Names that Go's builtins or sprig's TxtFuncMap define but this module does not implement:
# a template using one is valid Go, so it is reported as unsupported rather than treated as
# a parse error (which would silently send an empty body).
_GO_AND_SPRIG_NAMES = """
    and call html index slice js not or printf println urlquery eq ne lt le gt ge
    abbrev abbrevboth add add1 adler32sum ago append atoi b32dec b32enc base biggest buildCustomCert
    camelcase ceil chunk clean coalesce compact concat contains date dateInZone dateModify
    date_in_zone date_modify decryptAES deepCopy deepEqual default derivePassword dict dig dir
    div empty encryptAES env expandenv ext fail first float64 floor fromJson genCA
    genPrivateKey genSelfSignedCert genSignedCert has hasKey hasPrefix hasSuffix htmlDate
    htmlDateInZone indent initial initials int int64 isAbs join kebabcase keys kindIs kindOf
    last list lower max merge mergeOverwrite min mod mul mustAppend mustChunk mustCompact
    mustDateModify mustDeepCopy mustFirst mustFromJson mustHas mustInitial mustLast mustMerge
    mustMergeOverwrite mustPrepend mustPush mustRegexFind mustRegexFindAll mustRegexMatch
    mustRegexReplaceAll mustRegexReplaceAllLiteral mustRegexSplit mustRest mustReverse
    mustSlice mustToDate mustToJson mustToPrettyJson mustToRawJson mustUniq mustWithout
    nindent now omit osBase osClean osDir osExt osIsAbs pick pluck plural prepend push quote
    randAlpha randAlphaNum randAscii randBytes randInt randNumeric regexFind regexFindAll
    regexMatch regexQuoteMeta regexReplaceAll regexReplaceAllLiteral regexSplit rest reverse
    round semver semverCompare seq set sha1sum sha256sum shuffle snakecase sortAlpha split
    splitList splitn squote sub substr swapcase ternary title toDate toDecimal toJson
    toPrettyJson toRawJson toString toStrings trunc tuple typeIs typeIsLike typeOf uniq unixEpoch
    unset until untilStep untitle upper urlJoin urlParse uuidv4 values without wrap wrapWith
    getHostByName bcrypt htpasswd hello
"""
_KNOWN_UNIMPLEMENTED = frozenset(_GO_AND_SPRIG_NAMES.split()) - frozenset(_FUNCTIONS)


def _to_text(value: object) -> str:
    """fmt.Sprint of the values a template here can produce."""
    if value is None:
        return _NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---- lexing of one action ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "string", "number", "bool", "nil", "ident", "field", "dot", "pipe", "(", ")",
    #           "var", "keyword", "assign"
    value: object


def _unquote_go_string(body: str) -> str:
    """A Go interpreted string literal's contents (between the quotes) → its value."""
    out: list[str] = []
    index = 0
    simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    simple.update({"\\": "\\", '"': '"'})
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        if index + 1 >= len(body):
            raise TemplateParseError("unterminated escape in quoted string")
        code = body[index + 1]
        if code in simple:
            out.append(simple[code])
            index += 2
        elif code in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[index + 2 : index + 2 + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise TemplateParseError(f"invalid \\{code} escape in quoted string")
            number = int(digits, 16)
            if code == "x":
                out.append(chr(0xDC00 + number) if number >= 0x80 else chr(number))
            else:
                if number > 0x10FFFF or 0xD800 <= number <= 0xDFFF:
                    raise TemplateParseError("escape sequence is invalid Unicode code point")
                out.append(chr(number))
            index += 2 + width
        elif code in "01234567":
            digits = body[index + 1 : index + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits) or int(digits, 8) > 255:
                raise TemplateParseError("invalid octal escape in quoted string")
            number = int(digits, 8)
            out.append(chr(0xDC00 + number) if number >= 0x80 else chr(number))
            index += 4
        else:
            raise TemplateParseError(f"unknown escape sequence \\{code}")
    return "".join(out)


def _parse_number(text: str) -> int:
    cleaned = text.replace("_", "")
    try:
        return int(cleaned, 0)
    except ValueError:
        pass
    try:
        float(cleaned)
    except ValueError:
        raise TemplateParseError(f"bad number syntax: {text!r}") from None
    raise TemplateUnsupported(f"floating-point constant {text!r}")


def _lex_action(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(source):
        char = source[index]
        if char in _SPACE:
            index += 1
        elif char == '"':
            end = index + 1
            while end < len(source) and source[end] != '"':
                if source[end] == "\n":
                    raise TemplateParseError("unterminated quoted string")
                end += 2 if source[end] == "\\" else 1
            if end >= len(source):
                raise TemplateParseError("unterminated quoted string")
            tokens.append(_Token("string", _unquote_go_string(source[index + 1 : end])))
            index = end + 1
        elif char == "`":
            end = source.find("`", index + 1)
            if end < 0:
                raise TemplateParseError("unterminated raw quoted string")
            tokens.append(_Token("string", source[index + 1 : end].replace("\r", "")))
            index = end + 1
        elif char == "'":
            end = index + 1
            while end < len(source) and source[end] != "'":
                if source[end] == "\n":
                    raise TemplateParseError("unterminated character constant")
                end += 2 if source[end] == "\\" else 1
            if end >= len(source):
                raise TemplateParseError("unterminated character constant")
            body = source[index + 1 : end]
            value = _unquote_go_string(body) if body.startswith("\\") else body
            if len(value) != 1:
                raise TemplateParseError(f"malformed character constant: '{body}'")
            tokens.append(_Token("number", ord(value)))
            index = end + 1
        elif char in "0123456789" or (
            char in "+-" and index + 1 < len(source) and source[index + 1] in "0123456789"
        ):
            end = index + 1
            while end < len(source) and (source[end].isalnum() or source[end] in "._+-"):
                if source[end] in "+-" and source[end - 1] not in "eEpP":
                    break
                end += 1
            tokens.append(_Token("number", _parse_number(source[index:end])))
            index = end
        elif char == "|":
            tokens.append(_Token("pipe", "|"))
            index += 1
        elif char in "()":
            tokens.append(_Token(char, char))
            index += 1
        elif char == "." and (index + 1 >= len(source) or not _is_ident_char(source[index + 1])):
            tokens.append(_Token("dot", "."))
            index += 1
        elif char == ".":
            end = index + 1
            while end < len(source) and _is_ident_char(source[end]):
                end += 1
            tokens.append(_Token("field", source[index + 1 : end]))
            index = end
        elif char == "$":
            end = index + 1
            while end < len(source) and _is_ident_char(source[end]):
                end += 1
            tokens.append(_Token("var", source[index:end]))
            index = end
        elif (char == ":" and source[index : index + 2] == ":=") or char == "=":
            tokens.append(_Token("assign", char))
            index += 2 if char == ":" else 1
        elif _is_ident_char(char):
            end = index
            while end < len(source) and _is_ident_char(source[end]):
                end += 1
            word = source[index:end]
            if word in ("true", "false"):
                tokens.append(_Token("bool", word == "true"))
            elif word == "nil":
                tokens.append(_Token("nil", None))
            elif word in _KEYWORDS:
                tokens.append(_Token("keyword", word))
            else:
                tokens.append(_Token("ident", word))
            index = end
        else:
            raise TemplateParseError(f"unexpected {char!r} in command")
    return tokens


def _is_ident_char(char: str) -> bool:
    return char == "_" or char.isalnum()


# ---- parsing and evaluation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    args: tuple[object, ...]  # literals, _Call, _Pipeline, _Dot, _Field


@dataclass(frozen=True, slots=True)
class _Pipeline:
    commands: tuple[tuple[object, ...], ...]  # each command: its operands


@dataclass(frozen=True, slots=True)
class _Literal:
    value: object


@dataclass(frozen=True, slots=True)
class _Dot:
    pass


@dataclass(frozen=True, slots=True)
class _Field:
    name: str


def _parse_pipeline(tokens: list[_Token], start: int, closing: str | None) -> tuple[_Pipeline, int]:
    commands: list[tuple[object, ...]] = []
    operands: list[object] = []
    index = start
    while index < len(tokens):
        token = tokens[index]
        if token.kind == ")":
            if closing != ")":
                raise TemplateParseError("unexpected right paren")
            break
        if token.kind == "pipe":
            if not operands:
                raise TemplateParseError("missing command before '|'")
            commands.append(tuple(operands))
            operands = []
            index += 1
            continue
        if token.kind == "(":
            inner, index = _parse_pipeline(tokens, index + 1, ")")
            if index >= len(tokens) or tokens[index].kind != ")":
                raise TemplateParseError("unclosed left paren")
            operands.append(inner)
            index += 1
            continue
        if token.kind in ("keyword", "var", "assign"):
            raise TemplateUnsupported(f"template construct {token.value!r}")
        if token.kind == "ident":
            name = str(token.value)
            if name not in _FUNCTIONS:
                if name in _KNOWN_UNIMPLEMENTED:
                    raise TemplateUnsupported(f"sprig function {name!r} is not implemented")
                raise TemplateParseError(f'function "{name}" not defined')
            operands.append(_Call(name, ()))
        elif token.kind == "dot":
            operands.append(_Dot())
        elif token.kind == "field":
            operands.append(_Field(str(token.value)))
        else:
            operands.append(_Literal(token.value))
        index += 1
    if closing == ")" and (index >= len(tokens) or tokens[index].kind != ")"):
        raise TemplateParseError("unclosed left paren")
    if not operands:
        raise TemplateParseError("missing value for command" if commands else "empty command")
    commands.append(tuple(operands))
    # A literal can only start a command when it is the whole command (Go: "can't give
    # argument to non-function").
    for command in commands:
        if len(command) > 1 and not isinstance(command[0], _Call):
            raise TemplateParseError("can't give argument to non-function")
    for command in commands[1:]:
        if not isinstance(command[0], _Call):
            raise TemplateParseError("non executable command in pipeline stage")
    return _Pipeline(tuple(commands)), index


def _evaluate(node: object) -> object:
    if isinstance(node, _Literal):
        return node.value
    if isinstance(node, _Dot):
        return None  # go-ftw executes the template with nil data
    if isinstance(node, _Field):
        raise TemplateExecError(f"nil data; no entry for key {node.name!r}")
    if isinstance(node, _Pipeline):
        return _run_pipeline(node)
    if isinstance(node, _Call):
        return _call(node.name, [])
    raise TemplateExecError(f"cannot evaluate {node!r}")


def _call(name: str, args: list[object]) -> object:
    arity, function = _FUNCTIONS[name]
    if arity is not None and len(args) != arity:
        raise TemplateExecError(f"wrong number of args for {name}: want {arity} got {len(args)}")
    return function(*args)


def _run_pipeline(pipeline: _Pipeline) -> object:
    previous: object = None
    for position, command in enumerate(pipeline.commands):
        head = command[0]
        if isinstance(head, _Call):
            args = [_evaluate(operand) for operand in command[1:]]
            if position > 0:
                args.append(previous)
            previous = _call(head.name, args)
        else:
            previous = _evaluate(head)
    return previous


def _split(template: str) -> list[tuple[str, str]]:
    """Text and action pieces, with Go's trim markers and comments applied."""
    pieces: list[tuple[str, str]] = []
    index = 0
    trim_next = False
    while True:
        start = template.find("{{", index)
        text = template[index:] if start < 0 else template[index:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            pieces.append(("text", text))
            return pieces
        inner_start = start + 2
        comment_at = inner_start  # Go: a comment starts right after the delimiter …
        if template[inner_start : inner_start + 1] == "-" and (
            template[inner_start + 1 : inner_start + 2] in tuple(_SPACE)
        ):
            text = text.rstrip(_SPACE)
            inner_start += 1
            comment_at = inner_start + 1  # … or after the trim marker and its space
        pieces.append(("text", text))
        if template.startswith("/*", comment_at):
            close = template.find("*/", comment_at + 2)
            if close < 0:
                raise TemplateParseError("unclosed comment")
            after = close + 2
            trim_next = False
            if template[after : after + 1] in tuple(_SPACE) and template.startswith(
                "-}}", after + 1
            ):
                trim_next = True
                after += 2
            if not template.startswith("}}", after):
                raise TemplateParseError("comment ends before closing delimiter")
            index = after + 2
            continue
        end = _find_action_end(template, inner_start)
        body = template[inner_start:end]
        trim_next = False
        if len(body) >= 2 and body[-1] == "-" and body[-2] in _SPACE:
            trim_next = True
            body = body[:-1]
        pieces.append(("action", body))
        index = end + 2


def _find_action_end(template: str, start: int) -> int:
    """Index of the ``}}`` closing the action at ``start`` (quotes may hold ``}}``)."""
    index = start
    while index < len(template):
        char = template[index]
        if template.startswith("}}", index):
            return index
        if char in "\"'`":
            close = index + 1
            while close < len(template) and template[close] != char:
                if char != "`" and template[close] == "\\":
                    close += 1
                elif char != "`" and template[close] == "\n":
                    raise TemplateParseError("unterminated quoted string")
                close += 1
            if close >= len(template):
                raise TemplateParseError("unterminated quoted string")
            index = close + 1
            continue
        index += 1
    raise TemplateParseError("unclosed action")


def render_go_template(template: str) -> str:
    """The text Go's ``text/template`` (with sprig) renders from ``template`` with nil data.

    Raises :class:`TemplateParseError` or :class:`TemplateExecError` where Go fails (go-ftw
    then sends an empty body) and :class:`TemplateUnsupported` for valid Go beyond this subset.
    """
    if "{{" not in template:
        return template
    pieces = _split(template)
    # Go parses the whole template before executing any of it.
    parsed: list[str | _Pipeline] = []
    for kind, content in pieces:
        if kind == "text":
            parsed.append(content)
            continue
        tokens = _lex_action(content)
        if not tokens:
            raise TemplateParseError("missing value for command")
        pipeline, end = _parse_pipeline(tokens, 0, None)
        if end != len(tokens):
            raise TemplateParseError("unexpected right paren")
        parsed.append(pipeline)
    out: list[str] = []
    for item in parsed:
        out.append(item if isinstance(item, str) else _to_text(_run_pipeline(item)))
    return "".join(out)
