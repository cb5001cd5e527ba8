"""Check a job's input against a schema: runpod's ``validate`` rules and messages.

A schema maps each accepted key to its rules::

    SCHEMA = {
        "prompt": {"type": str, "required": True},
        "steps": {"type": int, "required": False, "default": 25,
                  "constraints": lambda steps: 1 <= steps <= 150},
    }

    result = validate(job["input"], SCHEMA)
    if "errors" in result:
        return {"error": result["errors"]}
    job_input = result["validated_input"]

The messages are the ones runpod-python produces, word for word, because
callers and their users match on them. Where runpod crashes or skips a check
(a constraint on a missing key, a rule given as a JSON string without a type,
a constraint on a value whose type matches the default), this module reports
an error instead, and it never modifies the caller's input or schema.
"""

import json
from collections.abc import Mapping
from typing import Any, Optional, Union

__all__ = ["validate", "ValidationResult"]

ValidationResult = dict[str, Union[dict[str, Any], list[str]]]

# runpod's wording; each takes the key (and, for the type error, the types).
UNEXPECTED_INPUT = "Unexpected input. {} is not a valid input option."
MISSING_REQUIRED = "{} is a required input."
MISSING_DEFAULT = "Schema error, missing default value for {}."
MISSING_TYPE = "Schema error, missing type for {}."
WRONG_TYPE = "{} should be {} type, not {}."
CONSTRAINTS_FAILED = "{} does not meet the constraints."
RULES_NOT_A_DICT = "Schema error, {} is not a dictionary."
# Ours, for cases where runpod raises instead of reporting.
INVALID_TYPE = "Schema error, the type for {} is not a type."
INPUT_NOT_A_DICT = "Input should be a dictionary, not {}."

# A rule given as a JSON string can only name its type.
_TYPE_NAMES: dict[str, Any] = {
    "str": str,
    "string": str,
    "int": int,
    "integer": int,
    "float": float,
    "number": (int, float),
    "bool": bool,
    "boolean": bool,
    "list": list,
    "array": list,
    "dict": dict,
    "object": dict,
}


def _rules_of(rules: Any) -> Optional[Mapping[str, Any]]:
    """The rules of one key as a mapping, or None when they are unusable."""
    if isinstance(rules, Mapping):
        return rules
    if isinstance(rules, (str, bytes, bytearray)):
        try:
            parsed = json.loads(rules)
        except ValueError:
            return None
        return parsed if isinstance(parsed, Mapping) else None
    return None


def _type_of(declared: Any) -> Optional[Any]:
    """The isinstance() argument a rule's ``type`` stands for, or None."""
    if isinstance(declared, str):
        declared = _TYPE_NAMES.get(declared.strip().lower())
    try:
        isinstance(None, declared)
    except TypeError:
        return None
    return declared


def validate(raw_input: Any, schema: Mapping[str, Any]) -> ValidationResult:
    """Validate ``raw_input`` (a job's ``input``) against ``schema``.

    Returns ``{"validated_input": {...}}`` (the input with defaults filled in
    and ints given for ``float`` keys turned into floats) or ``{"errors":
    [message, ...]}`` listing every problem found. Rules per key: ``type``
    (a type or tuple of types), ``required`` (bool), ``default`` (used when
    the key is absent and not required) and ``constraints`` (a callable that
    must return true for the caller's value; an exception counts as false).
    """
    if not isinstance(schema, Mapping):
        raise TypeError(f"validate(): the schema must be a dict, not {type(schema).__name__}")
    if not isinstance(raw_input, Mapping):
        return {"errors": [INPUT_NOT_A_DICT.format(type(raw_input))]}

    errors: list[str] = []
    validated: dict[str, Any] = dict(raw_input)  # a copy: the caller's dict stays as it was

    for key in raw_input:
        if key not in schema:
            errors.append(UNEXPECTED_INPUT.format(key))

    usable: list[tuple[str, Mapping[str, Any]]] = []
    for key, raw_rules in schema.items():
        rules = _rules_of(raw_rules)
        if rules is None:
            errors.append(RULES_NOT_A_DICT.format(key))
        else:
            usable.append((key, rules))

    supplied = set(raw_input)
    for key, rules in usable:
        if "type" not in rules:
            errors.append(MISSING_TYPE.format(key))
        if "required" not in rules:
            errors.append(MISSING_REQUIRED.format(key))
        elif key not in supplied:
            if rules["required"]:
                errors.append(MISSING_REQUIRED.format(key))
            elif "default" in rules:
                validated[key] = rules["default"]
            else:
                errors.append(MISSING_DEFAULT.format(key))

    for key, rules in usable:
        if key not in validated:
            continue
        type_ok = True
        if "type" in rules:
            expected = _type_of(rules["type"])
            if expected is None:
                errors.append(INVALID_TYPE.format(key))
                type_ok = False
            else:
                value = validated[key]
                if expected is float and type(value) in (int, float):
                    validated[key] = value = float(value)
                # runpod's rule: a value of the default's type is accepted as is.
                matches_default = "default" in rules and isinstance(value, type(rules["default"]))
                if not matches_default and not isinstance(value, expected):
                    errors.append(
                        WRONG_TYPE.format(key, _type_text(rules["type"], expected), type(value))
                    )
                    type_ok = False
        # Constraints judge what the caller sent; a default is the schema's own choice.
        if type_ok and key in supplied and "constraints" in rules:
            if not _meets(rules["constraints"], validated[key]):
                errors.append(CONSTRAINTS_FAILED.format(key))

    if errors:
        return {"errors": errors}
    return {"validated_input": validated}


def _type_text(declared: Any, resolved: Any) -> str:
    # runpod prints the declared type itself (``<class 'str'>``); a JSON-string
    # rule's name is shown as the class it resolved to, for the same wording.
    return str(resolved if isinstance(declared, str) else declared)


def _meets(constraint: Any, value: Any) -> bool:
    if not callable(constraint):
        return False
    try:
        return bool(constraint(value))
    except Exception:  # noqa: BLE001 - a constraint that cannot judge the value rejects it
        return False
