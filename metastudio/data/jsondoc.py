"""Reading a JSON document MetaStudio did not necessarily write: bounded first, then checked
against its declared schema, every failure in plain words naming the field.

Each kind of JSON document MetaStudio reads (a model file's metadata, a project's manifest, an
autosave's sidecar, a cache index) declares what it must look like as a JSON Schema (draft
2020-12), checked with the ``jsonschema`` library: the standard, language-neutral way to declare
a JSON document, whose failures name the keyword, the path and the value, which is what a
message for a person needs.

Before the schema, :func:`parse_text` bounds the text itself, because the standard parser
would otherwise fail in ways no schema can catch: the text's length, its nesting depth
(counted without parsing: the parser recurses once per level and would overflow the stack),
the size of each number (an integer of more than ``max_int_digits`` digits; NaN and infinity,
which JSON does not have) and, for bytes, that they are UTF-8. :func:`check_value` applies the
same bounds to a document already in memory (one about to be written).

Two choices differ from plain JSON Schema, both stricter: ``"integer"`` means a number written
without a fraction or exponent (``5.0`` is not one), as Python reads it; and a failing
``pattern`` is worded with the ``description`` of its subschema (``"a '#rrggbb' colour"``),
since the pattern itself means nothing to a person.

:class:`Words` says how messages about one kind of document begin; every failure is an
instance of its ``error`` class, a :class:`~metastudio.errors.MetaStudioError`. ``jsonschema``
is imported on first use, so that starting the app does not pay for it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from metastudio.errors import MetaStudioError

#: Default bounds: characters of the text (bytes, for bytes), nesting levels, digits of an integer.
MAX_TEXT, MAX_DEPTH, MAX_INT_DIGITS = 16_000_000, 100, 40

# A JSON string, or an unterminated one running to the end of the text: optional closing quote,
# so a failed match never makes the regex engine retry from every later quote (linear time).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_BRACKET = re.compile(r"[\[\]{}]")
# A key a field's path names with a dot (``hyperparameters.lr``); others are quoted in brackets.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")


@dataclass(frozen=True)
class Words:
    """How messages about one kind of document read.

    ``error`` is the class raised; ``where`` names the file and starts every message
    (``"model file 'm.safetensors'"``, then ``": "``; empty: nothing); ``document`` names the
    whole document (``"its metadata"``, ``"the manifest"``); ``field`` comes before a field's
    path (default ``"<document>'s field"``). So: ``model file 'm.safetensors': field
    'image_size' must be at most 4096, not 100000``, ``the manifest's field 'classes[0].colour'
    must be a '#rrggbb' colour, not 'red'``."""

    error: type[MetaStudioError]
    where: str = ""
    document: str = "the document"
    field: str = ""

    def subject(self, path: Sequence[Any]) -> str:
        """``field 'a.b[2]'`` for a path inside the document, the document's name for ``()``."""
        if not path:
            return self.document
        field = self.field or f"{self.document}'s field"
        return f"{field} '{field_name(path)}'"

    def fail(self, path: Sequence[Any], rest: str) -> MetaStudioError:
        """The error saying that the value at ``path`` ``rest`` (``"must be ..."``, ``"holds ..."``)."""
        return self.say(f"{self.subject(path)} {rest}")

    def say(self, message: str) -> MetaStudioError:
        """The error with ``message``, prefixed by ``where``."""
        return self.error(f"{self.where}: {message}" if self.where else message)


def field_name(path: Sequence[Any]) -> str:
    """``hyperparameters.lr``, ``class_names[2]``: where a value is in the document."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _NAME.fullmatch(str(part)):
            out += f"[{json.dumps(str(part), ensure_ascii=False)}]"  # sizes["images/0123456789abcdef.png"]
        else:
            out += f".{part}" if out else str(part)
    return out


def describe(value: Any) -> str:
    """A value as a message quotes it: ``'red'``, ``2``, ``true``, ``null``, ``a list``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int) and value.bit_length() > 200:
        return "a very large number"  # repr() of a huge int is slow, and can fail
    if isinstance(value, (int, float, str)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


# ----------------------------------------------------------------------------------------------
# Bounded parsing


class _BadNumber:
    """A number of the text that cannot be used, and why (in words); an error once found."""

    def __init__(self, why: str):
        self.why = why


def _int_parser(max_digits: int) -> Callable[[str], int | _BadNumber]:
    def parse(text: str) -> int | _BadNumber:
        digits = len(text.lstrip("-"))
        if digits > max_digits:
            return _BadNumber(f"a number of {digits} digits ({text[:12]}...), more than the {max_digits} allowed")
        return int(text)

    return parse


def _parse_float(text: str) -> float | _BadNumber:
    value = float(text)
    return value if math.isfinite(value) else _BadNumber(f"a number too large to use ({text[:20]})")


def _parse_constant(name: str) -> _BadNumber:
    return _BadNumber(f"{name}, which is not a usable number")


def nesting(text: str, limit: int = MAX_DEPTH) -> int:
    """How deeply the JSON ``text`` nests, counted without parsing (stops once past ``limit``)."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > limit:
            break
    return deepest


def parse_text(text: str | bytes, words: Words, *, not_json: str | None = None, max_text: int = MAX_TEXT,
               max_depth: int = MAX_DEPTH, max_int_digits: int = MAX_INT_DIGITS) -> Any:
    """The JSON document ``text`` (bytes must be UTF-8), bounded as the module says; raises
    ``words.error`` saying what does not fit (``not_json``: the whole message when it is not JSON)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        data = bytes(text)
        if len(data) > max_text:
            raise words.fail((), f"is too long ({len(data):,} bytes, at most {max_text:,})")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise words.fail((), "is not UTF-8 text") from None
    elif len(text) > max_text:
        raise words.fail((), f"is too long ({len(text):,} characters, at most {max_text:,})")
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    if nesting(text, max_depth) > max_depth:
        raise words.fail((), f"nests more than {max_depth} levels deep")
    try:
        document = json.loads(text, parse_int=_int_parser(max_int_digits), parse_float=_parse_float,
                              parse_constant=_parse_constant)
    except ValueError as error:  # JSONDecodeError, or a lone surrogate escape
        if not_json is not None:
            raise words.error(not_json) from None
        where = (f"{error.msg[:1].lower()}{error.msg[1:]} (line {error.lineno}, column {error.colno})"
                 if isinstance(error, json.JSONDecodeError) else str(error))
        raise words.fail((), f"is not valid JSON: {where}") from None
    check_value(document, words, max_depth=max_depth, max_int_digits=max_int_digits)
    return document


def check_value(value: Any, words: Words, *, max_depth: int = MAX_DEPTH, max_int_digits: int = MAX_INT_DIGITS) -> None:
    """Refuse a document in memory that :func:`parse_text` would refuse as text: nested more
    than ``max_depth`` levels, an integer of more than ``max_int_digits`` digits, NaN or infinity.
    (Walked without recursion, so a document that refers to itself fails, too.)"""
    limit = 10**max_int_digits
    stack: list[tuple[tuple, Any, int]] = [((), value, 0)]
    while stack:
        path, node, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            if depth + 1 > max_depth:
                raise words.fail((), f"nests more than {max_depth} levels deep")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend(((*path, key), child, depth + 1) for key, child in reversed(list(items)))
        elif isinstance(node, _BadNumber):
            raise words.fail(path, f"holds {node.why}")
        elif isinstance(node, float) and not math.isfinite(node):
            raise words.fail(path, f"holds {node}, which is not a usable number")
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) >= limit:
            raise words.fail(path, f"holds a number of more than the {max_int_digits} digits allowed")


# ----------------------------------------------------------------------------------------------
# The schema

_VALIDATORS: dict[int, tuple[dict[str, Any], Any]] = {}


def _validator(schema: dict[str, Any]):
    """The validator of ``schema`` (made, and the schema itself checked, once per schema)."""
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    import jsonschema  # imported on first use: opening the app does not pay for it

    base = jsonschema.Draft202012Validator
    base.check_schema(schema)
    strict = base.TYPE_CHECKER.redefine("integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    validator = jsonschema.validators.extend(base, type_checker=strict)(schema)
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


_TYPE_WORDS = {"object": "an object", "array": "a list", "string": "a string", "integer": "a whole number",
               "number": "a number", "boolean": "true/false", "null": "null"}


def _one_of(words: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _expected(error) -> str:
    """What the value at ``error``'s path should have been, in words."""
    rule, value, instance = error.validator, error.validator_value, error.instance
    fixed = {
        "type": lambda: _one_of([_TYPE_WORDS[k] for k in ([value] if isinstance(value, str) else value)]),
        "enum": lambda: _one_of([describe(c) for c in value]),
        "const": lambda: describe(value),
        "minimum": lambda: f"at least {_number(value)}",
        "maximum": lambda: f"at most {_number(value)}",
        "exclusiveMinimum": lambda: f"more than {_number(value)}",
        "exclusiveMaximum": lambda: f"less than {_number(value)}",
        "minLength": lambda: "a non-empty string" if value == 1 else f"at least {value} characters long",
        "maxLength": lambda: f"at most {value} characters long (it has {len(instance)})",
        "minItems": lambda: f"a list of at least {value} entries",
        "maxItems": lambda: f"at most {value} entries long (it has {len(instance)})",
        "maxProperties": lambda: f"at most {value} entries long (it has {len(instance)})",
        "pattern": lambda: error.schema.get("description", f"text matching {value}"),
    }
    return fixed[rule]() if rule in fixed else error.message


def schema_message(error, words: Words) -> MetaStudioError:
    """The error for one ``jsonschema`` failure, in plain words."""
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = next(name for name in error.validator_value if name not in error.instance)
        return words.fail([*path, missing], "is missing")
    if "propertyNames" in error.relative_schema_path:  # a key of an object, not a value
        return words.fail(path, f"has a key {describe(error.instance)}, but a key must be {_expected(error)}")
    return words.fail(path, f"must be {_expected(error)}, not {describe(error.instance)}")


def validate(document: Any, schema: dict[str, Any], words: Words) -> None:
    """Raise ``words.error`` for the most telling way ``document`` does not fit ``schema``."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(schema).iter_errors(document))
    if error is not None:
        raise schema_message(error, words)


def read_document(text: str | bytes, schema: dict[str, Any], words: Words, *,
                  check: Callable[[Any], None] | None = None, not_json: str | None = None,
                  max_text: int = MAX_TEXT, max_depth: int = MAX_DEPTH, max_int_digits: int = MAX_INT_DIGITS) -> Any:
    """The JSON document ``text``, bounded (:func:`parse_text`) and checked against ``schema``.

    ``check``, if given, sees the parsed document before the schema does, to refuse it with a
    better message than the schema would give (a document of another kind, or of a newer format
    version whose shape may have changed). Every failure is a ``words.error``."""
    document = parse_text(text, words, not_json=not_json, max_text=max_text, max_depth=max_depth,
                          max_int_digits=max_int_digits)
    if check is not None:
        check(document)
    validate(document, schema, words)
    return document
