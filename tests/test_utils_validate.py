"""validate(): runpod's rules and exact error strings, minus its crashes."""

import copy
import json
from typing import Any, Dict

import pytest

from wavespeed.serverless.utils import validate

pytestmark = pytest.mark.timeout(30)

SCHEMA: Dict[str, Any] = {
    "prompt": {"type": str, "required": True},
    "steps": {"type": int, "required": False, "default": 20, "constraints": lambda s: 0 < s < 100},
    "guidance": {"type": float, "required": False, "default": 7.5},
    "seed": {"type": int, "required": False, "default": None},
}


def test_valid_input_gets_defaults_and_float_coercion() -> None:
    result = validate({"prompt": "a", "guidance": 3}, SCHEMA)
    assert result == {"validated_input": {"prompt": "a", "guidance": 3.0, "steps": 20, "seed": None}}
    assert type(result["validated_input"]["guidance"]) is float


def test_unexpected_input() -> None:
    assert validate({"prompt": "a", "x": 1}, SCHEMA) == {
        "errors": ["Unexpected input. x is not a valid input option."]
    }


def test_missing_required() -> None:
    assert validate({}, SCHEMA) == {"errors": ["prompt is a required input."]}


def test_missing_required_flag_is_reported_as_required() -> None:
    # runpod's wording when a rule has no "required" key at all.
    assert validate({"a": 1}, {"a": {"type": int}}) == {"errors": ["a is a required input."]}


def test_missing_type_and_default() -> None:
    assert validate({}, {"a": {"required": False}}) == {
        "errors": ["Schema error, missing type for a.", "Schema error, missing default value for a."]
    }


def test_wrong_type_message_shows_the_classes() -> None:
    assert validate({"prompt": 1}, SCHEMA) == {
        "errors": ["prompt should be <class 'str'> type, not <class 'int'>."]
    }


def test_wrong_type_for_a_tuple_of_types() -> None:
    schema = {"n": {"type": (int, float), "required": True}}
    assert validate({"n": 2}, schema) == {"validated_input": {"n": 2}}
    assert validate({"n": "2"}, schema) == {
        "errors": ["n should be (<class 'int'>, <class 'float'>) type, not <class 'str'>."]
    }


def test_constraints_failed() -> None:
    assert validate({"prompt": "a", "steps": 500}, SCHEMA) == {"errors": ["steps does not meet the constraints."]}


def test_schema_rule_not_a_dict() -> None:
    assert validate({}, {"a": "not json"}) == {"errors": ["Schema error, a is not a dictionary."]}
    assert validate({}, {"a": 5}) == {"errors": ["Schema error, a is not a dictionary."]}


def test_rule_given_as_json_text() -> None:
    schema = {"a": json.dumps({"type": "int", "required": False, "default": 3})}
    assert validate({}, schema) == {"validated_input": {"a": 3}}
    assert validate({"a": "x"}, schema) == {"errors": ["a should be <class 'int'> type, not <class 'str'>."]}


def test_errors_are_all_reported_in_order() -> None:
    result = validate({"prompt": 2, "steps": 0, "zzz": True}, SCHEMA)
    assert result == {
        "errors": [
            "Unexpected input. zzz is not a valid input option.",
            "prompt should be <class 'str'> type, not <class 'int'>.",
            "steps does not meet the constraints.",
        ]
    }


def test_value_of_the_defaults_type_is_accepted() -> None:
    # runpod's rule: seed defaults to None, so an explicit None is fine.
    assert validate({"prompt": "a", "seed": None}, SCHEMA)["validated_input"]["seed"] is None


def test_bool_counts_as_int_like_runpod() -> None:
    assert validate({"prompt": "a", "steps": True}, SCHEMA)["validated_input"]["steps"] is True


def test_constraint_on_a_missing_key_never_runs() -> None:
    # runpod calls the constraint with None here and crashes on `None > 5`.
    schema = {"a": {"type": int, "required": True, "constraints": lambda x: x > 5}}
    assert validate({}, schema) == {"errors": ["a is a required input."]}


def test_constraint_on_a_default_is_not_applied() -> None:
    schema = {"a": {"type": int, "required": False, "default": None, "constraints": lambda x: x > 5}}
    assert validate({}, schema) == {"validated_input": {"a": None}}


def test_constraint_that_raises_is_a_failure_not_a_crash() -> None:
    schema = {"a": {"type": str, "required": True, "constraints": lambda x: int(x) > 1}}
    assert validate({"a": "abc"}, schema) == {"errors": ["a does not meet the constraints."]}
    assert validate({"a": "7"}, schema) == {"validated_input": {"a": "7"}}


def test_constraint_is_checked_even_when_the_type_matches_the_default() -> None:
    # runpod skips the constraints in this case; a constraint exists to be checked.
    assert "errors" in validate({"prompt": "a", "steps": 1000}, SCHEMA)


def test_constraints_not_run_after_a_type_error() -> None:
    schema = {"a": {"type": str, "required": True, "constraints": lambda x: len(x) > 1}}
    assert validate({"a": 5}, schema) == {"errors": ["a should be <class 'str'> type, not <class 'int'>."]}


def test_invalid_type_in_schema_is_an_error() -> None:
    assert validate({"a": 1}, {"a": {"type": "nonsense", "required": True}}) == {
        "errors": ["Schema error, the type for a is not a type."]
    }


def test_non_dict_input_is_an_error() -> None:
    assert validate(["a"], SCHEMA) == {"errors": ["Input should be a dictionary, not <class 'list'>."]}


def test_non_dict_schema_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        validate({}, ["a"])  # type: ignore[arg-type]


def test_neither_input_nor_schema_is_mutated() -> None:
    schema = {"a": json.dumps({"type": "int", "required": False, "default": 1}), **SCHEMA}
    raw = {"prompt": "x", "guidance": 1, "nested": {"k": [1]}}
    schema_before, raw_before = copy.copy(schema), copy.deepcopy(raw)
    validate(raw, schema)
    validate({"prompt": "x"}, schema)
    assert schema == schema_before and all(schema[k] is schema_before[k] for k in schema)
    assert raw == raw_before


def test_runpod_names_are_the_same_function() -> None:
    from wavespeed.serverless.utils.validation import validate as direct

    assert validate is direct
