"""Loading a profile: params/<profile>.yaml over params/default.yaml, overrides, validation; the
parameters each notebook receives."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainmri.config.paths import find_root
from brainmri.config.schema import (
    ALL_KEYS,
    SCHEMA,
    TOP_LEVEL_EXTRAS,
    ParamError,
    check_profile_name,
    check_value,
    validate,
)
from brainmri.config.stages import get_stage

# --- loading and validation -----------------------------------------------------------------


# YAML 1.2's floats: PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent,
# so ``1e-4`` (the way papers write a learning rate) would load as a string and fail validation.
# The pattern is the 1.1 resolver's with the dot and the sign made optional (yaml/pyyaml#173).
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


MAX_DEPTH = 16
"""The deepest nesting a profile (or a tool's value) may have; a profile needs three levels
(section, key, list). PyYAML composes nodes recursively, so a document nested thousands of
levels deep would end in a RecursionError rather than a message."""


def _loader() -> type:
    """The SafeLoader subclass every profile is read with (see :func:`parse_yaml`)."""
    import yaml  # imported here so Paths works with the standard library alone (make clean)
    from yaml.composer import ComposerError
    from yaml.constructor import ConstructorError

    class Loader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 floats that refuses aliases, duplicate keys and deep nesting."""

        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            # Aliases are refused, not expanded with a cap: a profile writes every value out,
            # and an alias is how a few hundred bytes become gigabytes ("billion laughs").
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ComposerError(
                    None,
                    None,
                    f"found the alias '*{event.anchor}': anchors and aliases are not allowed "
                    "in a profile; write the value out",
                    event.start_mark,
                )
            if self.depth >= MAX_DEPTH:
                raise ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_DEPTH} levels deep (a profile needs three)",
                    self.peek_event().start_mark,
                )
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            # A second `train:` section, or a key given twice, would silently replace the first
            # (a second section resets every key of the first to its default): refuse it.
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<` merges keys by design
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.get(key)
                except TypeError:
                    continue  # an unhashable key: the base class refuses it with its own message
                if seen is not None:
                    raise ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first at line {seen.line + 1}): give each "
                        "section and key once",
                        key_node.start_mark,
                    )
                first[key] = key_node.start_mark
            return super().construct_mapping(node, deep=deep)

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return Loader


def parse_yaml(text: str) -> Any:
    """Parse YAML as ``yaml.safe_load`` does, except that ``1e-4`` is a float (YAML 1.2), and
    aliases, duplicate keys and nesting deeper than :data:`MAX_DEPTH` are refused.

    A sexagesimal float (``1:30.5``, YAML 1.1 only) stays a string, and so does ``+.5`` (as in
    PyYAML); a string of digits with an ``e`` (a short commit hash such as ``0e12345``) becomes
    a number, so quote such strings.

    Args:
        text: a YAML document, e.g. a profile file or one ``KEY=VALUE`` value of a tool.

    Returns:
        The parsed document (None when empty).

    Raises:
        yaml.YAMLError: the text is not valid YAML, or holds an alias, a duplicate key or too
            deep a nesting (a ``MarkedYAMLError`` with the line).
        ValueError: a value YAML recognises cannot be built (a date such as ``2020-13-45``).
    """
    import yaml

    return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass


def _yaml_problem(exc: Exception) -> str:
    """One line from a YAML error: the line and column, and the problem (PyYAML's spans lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return " ".join((f"{where}: {problem}" + (f" ({context})" if context else "")).split())


def _read_yaml(path: Path) -> dict[str, Any]:
    """Read one profile file; every way it can be unreadable is a one-line ParamError."""
    import yaml  # imported here so Paths works with the standard library alone (make clean)

    if not path.is_file():
        raise ParamError(f"{path}: no such profile file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")  # not the locale's encoding: a profile is UTF-8 everywhere
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ParamError(
            f"{path}: not UTF-8 text (line {line}, byte {exc.start}: {exc.reason}); "
            "save the profile as UTF-8"
        ) from None
    try:
        data = parse_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ParamError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except (ValueError, RecursionError) as exc:  # a value YAML cannot build; a last resort
        raise ParamError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of sections, found {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], update: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Overlay a profile's sections on the defaults, rejecting unknown sections and keys."""
    merged = copy.deepcopy(base)
    for section, values in update.items():
        if section in TOP_LEVEL_EXTRAS:
            merged[section] = values
            continue
        if section not in SCHEMA:
            allowed = ", ".join([*SCHEMA, *TOP_LEVEL_EXTRAS])
            raise ParamError(f"{source}: unknown section '{section}' (allowed: {allowed})")
        if not isinstance(values, dict):
            raise ParamError(f"{source}: section '{section}' must be a mapping of keys")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                hint = f" (it belongs in '{ALL_KEYS[key]}')" if key in ALL_KEYS else ""
                allowed = ", ".join(SCHEMA[section])
                raise ParamError(
                    f"{source}: unknown key '{section}.{key}'{hint}; allowed: {allowed}"
                )
            merged.setdefault(section, {})[key] = value
    return merged


def load_profile(
    profile: str, root: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Load params/<profile>.yaml over params/default.yaml, apply flat overrides, validate.

    The profile file only needs the keys it changes; every key of the merged result is then
    checked against :data:`SCHEMA`.

    Args:
        profile: the stem of a file in params/; "default" loads params/default.yaml alone.
        root: the project root; None finds it (:func:`find_root`).
        overrides: flat parameter names (e.g. ``{"epochs": 2}``) mapped to values, applied
            after the profile; each name is placed in its own section.

    Returns:
        The validated parameters nested by section (``{"run": {...}, "data": {...}, ...}``,
        plus "description" when the profile has one), ints widened to float where a float
        is expected.

    Raises:
        ParamError: a profile file is missing or not valid YAML, or a section, key or
            override is unknown, missing or has a value out of its allowed range.
        NotAProject: root is None and no project root is found (a FileNotFoundError).
    """
    params_dir = (Path(root) if root else find_root()) / "params"
    default_file = params_dir / "default.yaml"
    check_profile_name(profile)
    params = _read_yaml(default_file)
    source = str(default_file)
    if profile != "default":
        profile_file = params_dir / f"{profile}.yaml"
        if not profile_file.is_file():
            known = sorted(p.stem for p in params_dir.glob("*.yaml"))
            raise ParamError(f"{profile_file}: no such profile (known profiles: {known})")
        source = str(profile_file)
        params = _merge(params, _read_yaml(profile_file), source)
    else:
        params = _merge({}, params, source)
    if overrides:
        nested: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            if key not in ALL_KEYS:
                raise ParamError(f"override '{key}': unknown parameter")
            nested.setdefault(ALL_KEYS[key], {})[key] = value
        params = _merge(params, nested, f"{source} (with overrides {dict(overrides)})")
    return validate(params, source)


def stage_params(params: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """Return the flat parameters a stage's notebook receives.

    Args:
        params: the nested parameters, as :func:`load_profile` returns them.
        stage: a stage name, e.g. ``"03_train"``.

    Returns:
        The keys of the stage's sections (:attr:`Stage.sections`) merged into one mapping.

    Raises:
        KeyError: the stage is not one of :data:`STAGES`.
    """
    flat: dict[str, Any] = {}
    for section in get_stage(stage).sections:
        flat.update(params[section])
    return flat


def flat_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Return every parameter as one flat mapping."""
    return {k: v for section in SCHEMA for k, v in params[section].items()}


def notebook_config(stage: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a notebook's parameter values (as papermill injected them) and return them.

    Args:
        stage: the notebook's stage name, e.g. ``"03_train"``.
        values: a mapping holding at least every key of the stage's sections; notebooks pass
            ``globals()``, and keys that are not parameters of the stage are ignored.

    Returns:
        The stage's parameters as one flat mapping, ints widened to float where a float is
        expected.

    Raises:
        ParamError: a parameter is missing or has a value out of its allowed range.
        KeyError: the stage is not one of :data:`STAGES`.
    """
    flat: dict[str, Any] = {}
    for section in get_stage(stage).sections:
        for key, spec in SCHEMA[section].items():
            if key not in values:
                raise ParamError(f"notebook {stage}: parameter '{key}' is missing")
            flat[key] = check_value(spec, values[key], where=f"notebook {stage}", key=key)
    return flat
