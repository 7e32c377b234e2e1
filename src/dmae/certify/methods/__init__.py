"""The certification methods, one module each in this package, found here by their names.

Each module of this package holds one ``dmae.certify.base.CertificationMethod`` subclass: adding
a method is adding its module, nothing else. The config schema's ``certify.method`` (its choices
and default) and every method's own settings of ``certify`` are generated from them: the schema
marks ``certify.method`` with ``x-registry: dmae.certify.methods``, and ``dmae.config`` asks
this module for those properties (``schema_properties``), to complete a config's method settings
(``complete``) and to say which of them it filled in (``filled_from``).

Every job validates its config, so this package and its modules load no torch or scipy;
``dmae.certify.certifier`` builds a method's certifier.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import pkgutil
import re

from dmae.certify.base import CertificationMethod
from dmae.config import ConfigError

DEFAULT_METHOD = "cohen"  # the paper's
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # it names the folder certify-<name>/ too


class MethodError(ValueError):
    """A module of this package does not define a certification method as it must."""


@functools.cache
def registered() -> dict[str, type[CertificationMethod]]:
    """certify.method -> the class of that method, from the modules of this package."""
    found: dict[str, type[CertificationMethod]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        classes = [obj for obj in vars(module).values()
                   if inspect.isclass(obj) and issubclass(obj, CertificationMethod)
                   and obj.__module__ == module.__name__ and not inspect.isabstract(obj)]
        if len(classes) != 1:
            raise MethodError(f"{module.__file__}: a module of {__name__} defines one "
                              "certification method (a dmae.certify.base.CertificationMethod "
                              "subclass), "
                              f"found {len(classes)}: "
                              f"{', '.join(c.__name__ for c in classes) or 'none'}")
        _check(classes[0], module.__file__, found)
        found[classes[0].name] = classes[0]
    if DEFAULT_METHOD not in found:
        raise MethodError(f"{__name__}: no method {DEFAULT_METHOD!r}, the default of "
                          "certify.method")
    return found


def _check(cls: type[CertificationMethod], where: str,
           found: dict[str, type[CertificationMethod]]) -> None:
    """MethodError naming the module unless ``cls`` says what the registry needs of it."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise MethodError(f"{where}: {cls.__name__}.name must be a lower-case name "
                          f"({_NAME.pattern}), got {name!r}")
    if name in found:
        raise MethodError(f"{where}: method {name!r} is defined by "
                          f"{inspect.getfile(found[name])} already")
    if not isinstance(getattr(cls, "summary", None), str) or not cls.summary:
        raise MethodError(f"{where}: {cls.__name__}.summary must say what {name} does, got "
                          f"{getattr(cls, 'summary', None)!r}")
    taken = {key: other for other, known in found.items() for key in known.settings}
    for key, spec in cls.settings.items():
        if key in taken:
            raise MethodError(f"{where}: certify.{key} is a setting of {taken[key]} already; "
                              "a setting belongs to one method")
        if not isinstance(spec, dict) or "default" not in spec or "description" not in spec:
            raise MethodError(f"{where}: {cls.__name__}.settings[{key!r}] must be a JSON schema "
                              f"with a default and a description, got {spec!r}")
    for key in cls.derived:
        if key not in cls.settings:
            raise MethodError(f"{where}: {cls.__name__}.derived names {key!r}, which is not "
                              f"one of its settings ({', '.join(cls.settings) or 'none'})")


def get(name: str) -> type[CertificationMethod]:
    """The class of certification method ``name``."""
    known = registered()
    if name not in known:
        raise ValueError(f"certify.method: unknown method {name!r}; expected one of "
                         f"{', '.join(sorted(known))}")
    return known[name]


def method_settings(cfg: dict) -> tuple[str, dict]:
    """A (validated) config's certification method and the sampling settings it takes:
    n0, n, alpha and the method's own keys of ``certify``."""
    c = cfg["certify"]
    keys = ("n0", "n", "alpha", *get(c["method"]).settings)
    return c["method"], {key: c[key] for key in keys}


def from_config(cfg: dict) -> CertificationMethod:
    """A (validated) config's certification method, with its settings."""
    name, settings = method_settings(cfg)
    return get(name)(**settings)


# ------------------------------------------------------------- what dmae.config asks of it


def schema_properties(key: str, node: dict) -> dict[str, dict]:
    """The schema's ``certify.method`` (``node``) with the methods as its choices, followed by
    every method's own settings, each marked ``x-method: <its method>``."""
    methods = registered()
    said = "; ".join(f"{name}: {cls.summary}" for name, cls in methods.items())
    props = {key: {**node, "enum": list(methods), "default": DEFAULT_METHOD,
                   "description": f"{node.get('description', '')} ({said})"}}
    for name, cls in methods.items():
        for setting, spec in cls.settings.items():
            props[setting] = {"x-method": name, **copy.deepcopy(spec),
                              "description": f"{name}: {spec['description']}"}
    return props


def complete(cfg: dict, source: str) -> None:
    """Drop the other methods' settings, fill in the derived settings of the config's method
    (``CertificationMethod.derived``) and check its settings as building it does; ConfigError
    naming the key otherwise."""
    certify = cfg["certify"]
    cls = get(certify["method"])
    # Only the chosen method's settings stay: another's (its defaults, or written before a
    # switch of method) would rerun every certification when they change.
    for name, other in registered().items():
        for setting in other.settings if name != certify["method"] else ():
            certify.pop(setting, None)
    filled = {}
    for setting, key in cls.derived.items():
        if certify[setting] is None:
            certify[setting] = copy.deepcopy(_value(cfg, key))
            filled[setting] = key
    try:
        from_config(cfg)
    except ValueError as err:
        note = "".join(f" (certify.{setting}: null, so the value of {key})"
                       for setting, key in filled.items())
        raise ConfigError(f"{source}: {err}{note}") from None


def filled_from(cfg: dict, written: dict) -> dict[str, str]:
    """The settings ``complete`` filled in where the config as written (``written``) leaves
    them null: {dotted key: the key its value came from}."""
    stated = written.get("certify") or {}
    return {f"certify.{setting}": key
            for setting, key in get(cfg["certify"]["method"]).derived.items()
            if stated.get(setting) is None}


def _value(cfg: dict, key: str):
    value = cfg
    for part in key.split("."):
        value = value[part]
    return value
