"""Issue 2, acceptance 5: bad specs raise ConfigErrors that name the field and the bad value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physlearn.errors import ConfigError
from physlearn.spec.network import NetworkSpec
from physlearn.spec.tomlconfig import validate


def base() -> dict[str, Any]:
    return {
        "nodes": {"count": 3, "mass": 1.0, "stiffness": [2.0, 2.5, 3.0], "damping": 0.05},
        "couplings": [
            {"kind": "product", "nodes": [0, 1], "value": 0.2},
            {"kind": "difference", "nodes": [1, 2], "value": 0.1, "lower": 0.0, "upper": 1.0},
        ],
        "biases": [{"node": 2, "value": 0.1}],
        "inputs": {"nodes": [0], "values": [1.0]},
        "outputs": {"nodes": [2], "target": {"kind": "inphase", "values": [0.3]}},
    }


def test_valid_spec_and_parameter_layout() -> None:
    spec = validate(NetworkSpec, base(), "test")
    assert spec.parameter_names() == [
        "couplings[0]:product:0-1",
        "couplings[1]:difference:1-2",
        "biases[0]:2",
    ]
    lo, hi = spec.parameter_bounds()
    assert lo[1] == 0.0 and hi[1] == 1.0 and lo[0] == -float("inf")


def test_onsite_stiffness_terms_come_last_in_parameter_order() -> None:
    data = base()
    data["onsite"] = [
        {"node": 2, "value": 0.3, "lower": -1.0, "upper": 1.0},
        {"node": 0, "value": -0.1, "trainable": False},
        {"node": 1, "value": 0.2},
    ]
    data["quartic"] = [{"node": 0, "value": 0.1, "trainable": True}]
    spec = validate(NetworkSpec, data, "test")
    assert spec.parameter_names()[-3:] == ["quartic[0]:0", "onsite[0]:2", "onsite[2]:1"]
    assert spec.parameter_units()[-2:] == ["N/m", "N/m"]
    assert list(spec.initial_parameters()[-2:]) == [0.3, 0.2]
    lo, hi = spec.parameter_bounds()
    assert (lo[-2], hi[-2]) == (-1.0, 1.0)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["couplings"][1].update(nodes=[1, 7]),
            "couplings[1].nodes: node 7 does not exist",
        ),
        (lambda d: d["nodes"].update(mass=-1.0), "nodes.mass[0]: must be a positive finite mass"),
        (
            lambda d: d["nodes"].update(stiffness=[1.0, 2.0]),
            "nodes.stiffness: 2 values for 3 nodes",
        ),
        (lambda d: d["nodes"].update(damping=-0.1), "nodes.damping[0]"),
        (
            lambda d: d["inputs"].update(mode="clamp", nodes=[2], values=[1.0]),
            "outputs.nodes[0]: node 2 is also a clamped input node",
        ),
        (
            lambda d: d["couplings"][0].update(nodes=[1, 1]),
            "couplings[0].nodes: a coupling needs two",
        ),
        (
            lambda d: d["couplings"].append({"nodes": [1, 0]}),
            "couplings[2]: duplicates couplings[0]",
        ),
        (
            lambda d: d["couplings"][1].update(value=2.0),
            "couplings[1].value: 2.0 is outside its bounds",
        ),
        (lambda d: d.update(nonlinearity="relu6"), "nonlinearity: unknown 'relu6'"),
        (lambda d: d["outputs"]["target"].update(values=[1, 2]), "outputs.target.values: 2 values"),
        (lambda d: d.update(boundary={"kind": "fixed_endpoints"}), "boundary.t_final_s"),
        (lambda d: d["nodes"].update(count=0), "nodes.count"),
        (lambda d: d["couplings"][0].update(kind="spring"), "couplings[0].kind"),
        (lambda d: d.update(colour="red"), "colour"),
        (
            lambda d: d.update(onsite=[{"node": 3, "value": 0.1}]),
            "onsite[0].node: node 3 does not exist",
        ),
        (
            lambda d: d.update(onsite=[{"node": 1}, {"node": 1, "value": 0.2}]),
            "onsite[1].node: duplicates onsite[0]",
        ),
        (
            lambda d: d.update(onsite=[{"node": 1, "value": 0.5, "lower": -0.2, "upper": 0.2}]),
            "onsite[0].value: 0.5 is outside its bounds",
        ),
        (lambda d: d.update(onsite=[{"node": 1, "value": float("nan")}]), "onsite[0].value"),
    ],
)
def test_bad_spec_names_the_field(mutate: Any, expected: str) -> None:
    data = base()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        validate(NetworkSpec, data, "net.toml")
    msg = str(info.value)
    assert msg.startswith("net.toml: ")
    assert expected in msg, msg


def test_toml_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[nodes]\ncount = 2\nmass = [1.0, -2.0]\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: .*nodes\.mass\[1\]"):
        NetworkSpec.from_toml(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[nodes\ncount = 2\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        NetworkSpec.from_toml(broken)
    with pytest.raises(ConfigError, match="no such config file"):
        NetworkSpec.from_toml(tmp_path / "missing.toml")


junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10)
    | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    section=st.sampled_from(
        ["nodes", "couplings", "biases", "inputs", "outputs", "drive", "boundary", "modulations"]
    ),
    value=junk,
)
def test_junk_in_any_section_is_a_config_error_or_valid(section: str, value: Any) -> None:
    data = base()
    data[section] = value
    try:
        validate(NetworkSpec, data, "junk.toml")
    except ConfigError as exc:
        assert str(exc).startswith("junk.toml: ")
