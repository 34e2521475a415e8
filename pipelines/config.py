"""Frozen dataclass configs, overridden by a YAML file and then by `--set key=value` flags.

Nested stage configs are addressed with dots (`extract.main_content=false`). Unknown keys and
values of the wrong type are errors that name the key, raised before any work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return build(tp, value, prefix=f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        key_tp, value_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            if key_tp is int and isinstance(k, str) and k.strip().lstrip("-").isdigit():
                k = int(k)  # JSON (a run's pipeline.json, --set) writes every mapping key as a string
            out[_coerce(k, key_tp, f"{key} key")] = _coerce(v, value_tp, f"{key}.{k}")
        return out
    if origin is list:
        items = [value] if isinstance(value, (str, int, float, dict)) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, key) for v in items]
    if origin is tuple:
        items = [value] if isinstance(value, (str, int, float)) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, key) for v in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


# sizes, counts, limits and durations: a negative one is always a mistake (and would silently mean "off" or "none")
_NON_NEGATIVE = re.compile(r"(_bytes|_chars|_mb|_s|_size|_docs|_tokens|_files|_retries|_workers|_steps|_cpus|_gpus)$|^num_")


def build(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Instantiate dataclass `cls` from a (nested) mapping, type-checking every field."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key '{prefix}{unknown[0]}'; known: {', '.join(sorted(fields))}")
    kwargs = {name: _coerce(v, hints[name], prefix + name) for name, v in values.items()}
    for name, v in kwargs.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0 and _NON_NEGATIVE.search(name):
            raise ValueError(f"{prefix}{name}: must be >= 0, got {v}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a config's own __post_init__ checks
        raise ValueError(_post_init_message(str(exc), cls, prefix)) from exc


def _post_init_message(msg: str, cls: type, prefix: str) -> str:
    """A config's own check, named by where it sits: a nested config whose message already names itself
    ("langid.min_score must be ...") or one of its fields ("min_score must be ...") gets the full dotted path
    (`curate.langid.min_score ...`) instead of a second prefix; anything else gets `<path>: `."""
    name = prefix.rstrip(".")
    if not name:
        return f"{cls.__name__}: {msg}"
    own = name.rsplit(".", 1)[-1]
    if msg.startswith(own + "."):
        return prefix + msg[len(own) + 1:]
    if msg.startswith(own + ": "):
        msg = msg[len(own) + 2:]
    first = re.split(r"[\s:]", msg, maxsplit=1)[0]
    if first in {f.name for f in dataclasses.fields(cls)}:
        return prefix + msg
    return f"{name}: {msg}"


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def merge_overrides(base: dict[str, Any], dotted: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base, default=list))
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """['extract.main_content=false', 'input=[a,b]'] -> typed values via YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {key.strip()}: bad value {raw!r} ({yaml_problem(exc)})") from None
    return out


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The YAML parser's complaint on one line, with the line and column where it noticed it."""
    if isinstance(exc, yaml.MarkedYAMLError):
        what = ", ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return " ".join(f"{what}{where}".split())
    return " ".join(str(exc).split()) or type(exc).__name__


def load_config_file(path: str) -> dict[str, Any]:
    """A YAML (or JSON) config file as a mapping ({} when empty); ValueError with a one-line reason when it is
    missing, unreadable, not YAML or not a mapping at the top."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ValueError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ValueError(f"config file {path} is a directory") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path}: {yaml_problem(exc)}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path}: top level must be a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def resolve(cls: type[T], yaml_path: str | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults <- YAML file <- dotted overrides, validated into a frozen `cls`."""
    values: dict[str, Any] = {}
    if yaml_path:
        values = load_config_file(yaml_path)
    values = merge_overrides(values, overrides or {})
    return build(cls, values)


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-able config (dict or dataclass)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    blob = json.dumps(obj, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal written under a field), by field name, with
    whitespace collapsed; {} when the source is not available."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's docstring wins
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, SyntaxError, IndexError, AttributeError):
            continue
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def config_help(cls: type, prefix: str = "") -> list[str]:
    """One line per `--set` key of a config dataclass (nested configs with dots): `key=default` and the first
    sentence of the field's docstring."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    lines = []
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name, f.type)
        if dataclasses.is_dataclass(tp):
            lines += config_help(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        doc = docs.get(f.name, "")
        first = re.split(r"(?<=\.)\s", doc, maxsplit=1)[0] if doc else ""
        first = first if len(first) <= 100 else first[:99].rstrip() + "…"
        shown = default if isinstance(default, str) and default else json.dumps(default, default=str)
        text = f"  {prefix}{f.name}={shown}"
        lines.append(f"{text:<38} {first}" if first else text)
    return lines


def config_parser(prog: str, description: str, cls: type):
    """An argparse parser whose help ends with the `--set KEY=VALUE` keys of `cls` (`config_help`)."""
    import argparse

    epilog = f"--set keys ({cls.__name__}; KEY=default):\n" + "\n".join(config_help(cls))
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def stage_main(argv: list[str] | None, prog: str, description: str, cls: type[T], run, format_summary,
               input_help: str, extra: list[tuple[str, dict[str, Any]]] = ()) -> int:
    """The command line of a corpus-wide stage (`--input`, `--output`, `--config`, `--num-cpus`, `--set`, `--json`,
    plus `extra` flags): flags override the YAML file, which overrides the defaults; ValueError -> exit code 2."""
    import sys

    p = config_parser(prog, description, cls)
    p.add_argument("--input", "-i", help=input_help)
    p.add_argument("--output", "-o")
    for flags, kwargs in extra:
        p.add_argument(*flags.split(), **kwargs)
    p.add_argument("--config", "-c")
    p.add_argument("--num-cpus", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (listed below)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(cls)}
    try:
        overrides = parse_set(args.set)
        for key, value in vars(args).items():
            if key in fields and value is not None:
                overrides[key] = value
        summary = run(resolve(cls, args.config, overrides))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
