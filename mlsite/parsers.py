"""A JSON parser that answers every malformed body with a 400, never a 500."""

import json
import math
import re
from typing import IO, Any

from django import forms
from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class BadJSON(ParseError):
    default_code = "bad_json"


# UTF-8 text cannot hold a surrogate, so one can only come from a \uD800-\uDFFF escape.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]", re.ASCII)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class StrictJSONParser(JSONParser):
    """DRF's JSON parser, stricter: no NaN or Infinity, no number that overflows a float,
    no nesting deeper than MAX_JSON_DEPTH, no string holding half a surrogate pair.

    DRF's own parser already refuses the NaN and Infinity literals, but lets 1e999 through as
    infinity and turns a body nested a few thousand levels deep into a RecursionError (500);
    here the decoder's RecursionError is a 400, and what it could parse is walked for depth.
    Python's decoder turns "\\udc00" into a lone surrogate, which no response can encode:
    an error message naming such a key was a UnicodeEncodeError, a 500.
    """

    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError:
            raise BadJSON(f"JSON parse error - the body is not {encoding} text") from None
        return parse_text(text)


class StrictJSONField(serializers.JSONField):
    """DRF's JSONField, reading JSON text from a form field as strictly as a body.

    DRF decodes such text with its own json.loads: text nested a thousand levels deep was a
    RecursionError (a 500), and 1e999 an infinity the database then refused (another).
    """

    def to_internal_value(self, data: Any) -> Any:
        if not (self.binary or getattr(data, "is_json_string", False)):
            return super().to_internal_value(data)  # already parsed, from a JSON body
        if isinstance(data, bytes):
            data = data.decode(errors="replace")
        if not isinstance(data, str):
            self.fail("invalid")
        return parse_text(data)


class StrictJSONFormField(forms.JSONField):
    """The admin's JSON box (a model's schema, a spec's params), read as strictly as a body.

    Django's own box caught only a JSONDecodeError: text nested a few thousand levels deep
    was a RecursionError (a 500), and 1e400 or Infinity an infinity that broke the database's
    JSON check on save (another).
    """

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and value not in self.empty_values and not self.disabled:
            try:
                parse_text(value)
            except BadJSON as exc:
                raise forms.ValidationError(str(exc.detail), code="invalid") from None
        return super().to_python(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except RecursionError:  # shown again as typed, as Django shows any invalid JSON
            return forms.fields.InvalidJSONInput(data)


def parse_text(text: str) -> Any:
    """JSON text read as strictly as a request body (the admin's pasted rows); raises BadJSON."""
    try:
        data = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_float_sized_int,
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise BadJSON(f"JSON parse error - {exc}") from None
    check_depth(data, settings.MAX_JSON_DEPTH)
    if SURROGATE_ESCAPE.search(text):  # rare: most bodies skip the walk
        check_text(data)
    return data


def check_depth(data: Any, limit: int) -> None:
    """Raise BadJSON when lists and objects nest deeper than `limit` (walked without recursion)."""
    if not isinstance(data, dict | list):
        return
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > limit:
            raise BadJSON(f"JSON parse error - nested deeper than {limit} levels")
        children = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def check_text(data: Any) -> None:
    """Raise BadJSON when a string or key holds a lone surrogate (walked without recursion)."""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and LONE_SURROGATE.search(value):
            raise BadJSON("JSON parse error - a \\uD800-\\uDFFF escape outside a surrogate pair")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON; send a finite number")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"{literal[:40]} is too large for a number")
    return number


def _float_sized_int(literal: str) -> int:
    # Features become floats: an integer past float range would overflow while scoring.
    # Python also refuses integers of more than 4300 digits (a ValueError, so a 400).
    number = int(literal)
    if len(literal) > 308 and not math.isfinite(_as_float(number)):
        raise ValueError(f"{literal[:40]}… is too large for a number")
    return number


def _as_float(number: int) -> float:
    try:
        return float(number)
    except OverflowError:
        return math.inf
