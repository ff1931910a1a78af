"""The typed-record machinery behind config.yaml: a section is a dataclass whose fields are its keys.

`setting(kind, default, ...)` declares one key (its type, default, bounds, whether it is a secret, and its
YAML name when that is not a Python name); `load_section` builds a section from its YAML mapping, filling
defaults, checking types and bounds, and reporting unknown keys. Nothing else lists the keys.
"""

from dataclasses import MISSING, dataclass, field, fields, is_dataclass

from .errors import ConfigError

NUMBER = (int, float)
INT_LIST = "list of integers"


def setting(kind, default, positive=False, secret=False, key=None):
    """A config key: its type, default, whether it must be > 0, whether it is a secret, and its YAML name
    when that is not a Python name (`email.from`)."""
    meta = {"kind": kind, "positive": positive, "secret": secret, "key": key}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


class Record:
    """__init__, == and repr over a dataclass's fields, shared instead of generated per class.

    Generating them (and the docstring dataclass would build from the signature) for every section costs
    each tick's import several milliseconds; these do the same work from `fields()` at call time.
    """

    def __init__(self, **values):
        for f in fields(self):
            if f.name in values:
                value = values.pop(f.name)
            elif f.default is not MISSING:
                value = f.default
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            else:
                raise TypeError(f"{type(self).__name__}: missing {f.name}")
            setattr(self, f.name, value)
        if values:
            raise TypeError(f"{type(self).__name__}: unknown {', '.join(values)}")

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in fields(self))})"


record = dataclass(init=False, repr=False, eq=False)

def schema_keys(cls):
    """(YAML key, field) of each config key of a section class; nested sections come back as fields too."""
    return [(f.metadata.get("key") or f.name, f) for f in fields(cls) if not f.metadata.get("internal")]


def _type_name(expected):
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list of strings", INT_LIST: "a list of integers"}
    if expected is NUMBER:
        return "a number"
    if isinstance(expected, tuple):
        return " or ".join(names[t] for t in expected)
    return names[expected]


def _is(value, kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    if kind == INT_LIST:
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, kinds)


def _check(file, key, value, f):
    """Return value if it fits the field's type and bounds, else raise ConfigError naming file and key."""
    meta = f.metadata
    if not _is(value, meta["kind"]):
        # A secret of the wrong type is still a secret: name its type, never echo it.
        shown = type(value).__name__ if meta["secret"] else repr(value)
        raise ConfigError(f"{file}: {key}: expected {_type_name(meta['kind'])}, got {shown}"[:300])
    if meta["positive"] and value <= 0:
        raise ConfigError(f"{file}: {key}: must be greater than 0, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0 and key != "telegram.chat_id":
        raise ConfigError(f"{file}: {key}: must not be negative, got {value!r}")
    return value


def mapping(file, data, name):
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {name}: expected a mapping of keys, got {type(data).__name__}")
    return data


def load_section(file, data, name, cls, warnings, defaults=None):
    """Build section `cls` from its YAML mapping: defaults filled, types checked, unknown keys warned."""
    data = mapping(file, data, name)
    values = {}
    known = set()
    for key, f in schema_keys(cls):
        known.add(key)
        if is_dataclass(f.type):
            values[f.name] = load_section(file, data.get(key), f"{name}.{key}", f.type, warnings)
            continue
        if key in data and data[key] is not None:
            values[f.name] = _check(file, f"{name}.{key}", data[key], f)
        elif defaults and key in defaults:
            values[f.name] = defaults[key]
    for key in data:
        if key not in known:
            warnings.append(f"{file}: unknown key {name}.{key} (ignored)")
    return cls(**values)
