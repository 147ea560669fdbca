"""Exact resource units: the API's decimals become integers, and back, without drift."""

import pytest

from shared.resources import CPU_SCALE, RAM_SCALE, Resources, from_units, to_units


def test_three_tenths_of_a_core_add_up_exactly():
    tenth = to_units(0.1, CPU_SCALE)
    assert tenth * 3 == to_units(0.3, CPU_SCALE) == 300
    assert Resources(tenth * 3).fits_in(Resources.from_api(0.3, 0, 0))


@pytest.mark.parametrize("value, units", [(0.5, 500), (1, 1000), (2.125, 2125), (0, 0), (1e-3, 1), (123.456, 123456)])
def test_cores_to_millicores(value, units):
    assert to_units(value, CPU_SCALE) == units


def test_more_than_three_decimals_is_refused():
    with pytest.raises(ValueError):
        to_units(0.0001, RAM_SCALE)


@pytest.mark.parametrize("units, value", [(4000, 4), (500, 0.5), (1, 0.001), (2125, 2.125)])
def test_units_back_to_numbers_keep_whole_numbers_whole(units, value):
    result = from_units(units, CPU_SCALE)
    assert result == value and type(result) is type(value)


def test_shortfalls_name_each_missing_resource():
    request = Resources.from_api(4, 8, 2)
    assert request.shortfalls(Resources.from_api(8, 4, 1)) == [("ram_gb", 8000, 4000), ("gpu", 2, 1)]
    assert request.shortfalls(Resources.from_api(4, 8, 2)) == []
