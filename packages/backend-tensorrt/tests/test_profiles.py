"""tao-converter's -p profiles: parsing, checks against the network's inputs, the default profile."""

import pytest

from tlkit.errors import SpecError
from tlkit_tensorrt.builder import Profile, parse_dims, parse_profile, parse_profiles, resolve_profiles


def test_parse_profile_values():
    p = parse_profile("input_1,1x3x544x960,8x3x544x960,16x3x544x960")
    assert p == Profile("input_1", (1, 3, 544, 960), (8, 3, 544, 960), (16, 3, 544, 960))
    assert p.as_dict() == {
        "name": "input_1",
        "min": [1, 3, 544, 960],
        "opt": [8, 3, 544, 960],
        "max": [16, 3, 544, 960],
    }
    assert parse_profile(" input , 1X3X8X8 ,2x3x8x8, 4x3x8x8").opt == (2, 3, 8, 8)  # spaces, upper-case X
    assert parse_dims("1x3x224x224") == (1, 3, 224, 224)


@pytest.mark.parametrize(
    "text, message",
    [
        ("input,1x3x32x32,2x3x32x32", "expected <input_name>,<min_shape>,<opt_shape>,<max_shape>"),
        (",1x3x32x32,2x3x32x32,4x3x32x32", "expected <input_name>"),
        ("input,1x3x32x32,2x3xAx32,4x3x32x32", "'2x3xAx32' is not a shape"),
        ("input,1x3x32x32,2x3x32x32,4x3x0x32", "every dim must be a positive integer"),
        ("input,1x3x32x32,2x3x32,4x3x32x32", "different ranks (4, 3, 4)"),
        ("input,4x3x32x32,2x3x32x32,8x3x32x32", "dim 0 must satisfy min <= opt <= max, got 4, 2, 8"),
    ],
)
def test_bad_profiles_name_the_problem(text, message):
    with pytest.raises(SpecError) as err:
        parse_profile(text)
    assert message in str(err.value)
    assert text in str(err.value)  # the message quotes the -p value


def test_profile_given_twice_is_refused():
    with pytest.raises(SpecError, match="-p given twice for input 'input'"):
        parse_profiles(["input,1x3x8x8,1x3x8x8,2x3x8x8", "input,1x3x8x8,2x3x8x8,2x3x8x8"])


def test_default_profile_for_dynamic_batch_and_static_inputs():
    inputs = [("input", (-1, 3, 32, 32)), ("aux", (1, 10))]
    (p,) = resolve_profiles(inputs, [], max_batch=16)
    assert p == Profile("input", (1, 3, 32, 32), (16, 3, 32, 32), (16, 3, 32, 32))
    given = [parse_profile("input,2x3x32x32,4x3x32x32,8x3x32x32")]
    assert resolve_profiles(inputs, given, max_batch=16) == given


@pytest.mark.parametrize(
    "inputs, profile, message",
    [
        (
            [("input", (-1, 3, 32, 32))],
            "data,1x3x32x32,1x3x32x32,2x3x32x32",
            "the network has no input 'data' (its inputs: input)",
        ),
        ([("input", (-1, 3, 32, 32))], "input,1x3x32,1x3x32,2x3x32", "shapes have 3 dims, the input has 4 (?x3x32x32)"),
        ([("input", (-1, 3, 32, 32))], "input,1x3x64x64,1x3x64x64,2x3x64x64", "dim 2 of the input is fixed at 32"),
        ([("input", (-1, 3, -1, -1))], None, "dynamic dims beyond the batch (?x3x?x?): give -p input,MIN,OPT,MAX"),
    ],
)
def test_profiles_checked_against_network(inputs, profile, message):
    given = [parse_profile(profile)] if profile else []
    with pytest.raises(SpecError) as err:
        resolve_profiles(inputs, given, max_batch=8)
    assert message in str(err.value)
