"""The file boundary: YAML and JSON documents read into pydantic models, every mistake one line;
files written whole or not at all.

Hardware profiles, fleets, inventories and plans all come from files a user may have written or
edited by hand. Reading them here means the same guarantees everywhere: the text must be UTF-8,
YAML aliases are refused (a kilobyte of nested aliases expands to gigabytes), and a validation
error becomes `file: field.path: message (got value; fix)` with the value cut short, never the
whole input.
"""

from __future__ import annotations

import json
import os
import reprlib
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from suite.errors import UserError


class Strict(BaseModel):
    """Unknown fields are mistakes; documents are values, never changed after reading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Model = TypeVar("Model", bound=BaseModel)

_HINTS = {
    "missing": "add it",
    "literal_error": "this suite reads only the schema version named",
    "too_short": "list at least one",
    "finite_number": "give a finite number",
}
_SHORT = reprlib.Repr()  # a value as a few characters, however large or deeply nested it is
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 30, 30


def shown(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def one_line(where: str, exc: ValidationError, model: type[BaseModel]) -> str:
    """The first validation error as `where: field.path: message (got value; fix)`."""
    errors = exc.errors()
    err = errors[0]
    field = ".".join(str(part) for part in err["loc"]) or "(top level)"
    notes = []
    if err["type"] == "value_error":  # a validator's own sentence says what is wrong and the fix
        return f"{where}: {'' if field == '(top level)' else field + ': '}{err['ctx']['error']}"
    if err["type"] == "extra_forbidden":
        notes.append(f"remove it; allowed here: {', '.join(_allowed(model, err['loc']))}")
    else:
        if err["type"] != "missing":
            notes.append(f"got {_SHORT.repr(err['input'])}")
        if err["type"] in _HINTS:
            notes.append(_HINTS[err["type"]])
    more = f" [and {len(errors) - 1} more]" if len(errors) > 1 else ""
    detail = f" ({'; '.join(notes)})" if notes else ""
    return f"{where}: {field}: {err['msg']}{detail}{more}"


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the sub-model that `loc` (ending in the bad key) points into."""
    for part in loc[:-1]:
        if part not in model.model_fields:  # a list index or a dict key
            continue
        annotation = model.model_fields[part].annotation
        args = getattr(annotation, "__args__", ())
        inner = [a for a in (annotation, *args) for a in (a, *getattr(a, "__args__", ()))]
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), model)
    return list(model.model_fields)


class _NoAliases(yaml.SafeLoader):
    """SafeLoader that refuses YAML aliases (`*name`), which can expand without bound."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here", mark)
        return super().compose_node(parent, index)


def _text(path: Path, error: type[UserError]) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{shown(path)} does not exist") from None
    except OSError as exc:
        raise error(f"{shown(path)}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{shown(path)}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_yaml(path: Path, model: type[Model], error: type[UserError]) -> Model:
    """A YAML file's mapping, validated as `model`; any mistake raises `error` with one line."""
    try:
        data = yaml.load(_text(path, error), Loader=_NoAliases)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{shown(path)}: not valid YAML: {problem}{at}") from None
    return validate(data, model, error, shown(path))


def read_json(path: Path, model: type[Model], error: type[UserError]) -> Model:
    """A JSON file's object, validated as `model`; any mistake raises `error` with one line."""
    try:
        data = json.loads(_text(path, error))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{shown(path)}: not valid JSON ({str(exc)[:80]})") from None
    return validate(data, model, error, shown(path))


def write_atomically(path: Path, content: str | bytes) -> None:
    """Write a file (text as UTF-8, or bytes) whole or not at all: an interrupted write never leaves
    half a file behind, and a full disk is one line."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        tmp.replace(path)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror or exc}); free space on its disk or write "
                        "elsewhere") from None  # fmt: skip
    finally:
        tmp.unlink(missing_ok=True)


def validate(data: object, model: type[Model], error: type[UserError], where: str) -> Model:
    if not isinstance(data, dict):
        raise error(f"{where}: expected a mapping of fields at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(one_line(where, exc, model)) from None
