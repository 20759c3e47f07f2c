from __future__ import annotations

import pytest

from harness.errors import RegistryError
from harness.registry import Registry, load_object
from strategies import STRATEGIES, get_strategy
from strategies.base import Strategy


def test_builtins_are_lazy_placeholders_until_used():
    reg = Registry("thing")
    reg.register("json_dumps", "json:dumps")
    assert "json_dumps" in reg
    import json
    assert reg.get("json_dumps") is json.dumps


def test_duplicate_name_is_an_error():
    reg = Registry("thing")
    reg.register("a", "json:dumps")
    with pytest.raises(RegistryError, match="duplicate thing name 'a'"):
        reg.register("a", "json:loads")


def test_unknown_name_did_you_mean():
    with pytest.raises(RegistryError) as e:
        STRATEGIES.get("gredy")
    assert "did you mean 'greedy'" in str(e.value)


def test_module_class_string_resolves_and_is_validated():
    assert get_strategy("strategies.native:TopP").name == "top_p"
    with pytest.raises(RegistryError, match="not a strategies.base.Strategy"):
        get_strategy("harness.config:slugify")
    with pytest.raises(RegistryError, match="cannot import module"):
        load_object("no_such_module_xyz:Thing")


@pytest.mark.parametrize("ref,message", [
    ("this:s", "'this' is a standard-library module, not a thing plugin"),
    ("os.path:join", "'os' is a standard-library module"),
    ("no_such_module_xyz:Thing", "no module 'no_such_module_xyz' on the Python path"),
    ("harness.no_such_module:Thing", "no module 'harness.no_such_module'"),
    ("harness/config:slugify", "expected 'package.module:attr' (dotted Python names)"),
    ("harness.config:", "expected 'package.module:attr'"),
    ("x" * 500 + ":y", "xxx..."),
])
def test_plugin_refs_are_checked_without_importing(ref, message, monkeypatch):
    import sys
    monkeypatch.delitem(sys.modules, "this", raising=False)
    reg = Registry("thing", validate=lambda name, obj: None)
    for call in (reg.check, reg.get):  # get applies the same rule before it imports
        with pytest.raises(RegistryError) as e:
            call(ref)
        assert message in str(e.value) and len(str(e.value)) < 400
    assert "this" not in sys.modules


def test_check_finds_a_submodule_without_running_its_package(tmp_path, monkeypatch):
    import os
    import sys
    pkg = tmp_path / "deceval_probe_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import os\nos.environ['DECEVAL_PROBE_RAN'] = '1'\n")
    (pkg / "sub" / "__init__.py").write_text("raise RuntimeError('must not run')\n")
    (pkg / "sub" / "mod.py").write_text("raise RuntimeError('must not run')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DECEVAL_PROBE_RAN", raising=False)
    reg = Registry("thing")
    reg.check("deceval_probe_pkg.sub.mod:Thing")
    with pytest.raises(RegistryError, match="no module 'deceval_probe_pkg.sub.other'"):
        reg.check("deceval_probe_pkg.sub.other:Thing")
    assert "DECEVAL_PROBE_RAN" not in os.environ and "deceval_probe_pkg" not in sys.modules


def test_check_accepts_registered_and_entry_point_names_and_suggests_others():
    reg = Registry("thing")
    reg.register("json_dumps", "json:dumps")  # registered by code: trusted, even from the standard library
    reg.check("json_dumps")
    with pytest.raises(RegistryError, match="did you mean 'json_dumps'"):
        reg.check("json_dump")
    STRATEGIES.check("wsp")


def test_native_strategies_registered():
    for name in ["greedy", "temperature", "top_k", "top_p", "min_p"]:
        cls = get_strategy(name)
        assert issubclass(cls, Strategy) and cls.name == name and not cls.stepwise


def test_native_sampling_kwargs():
    top_p = get_strategy("top_p").from_dict({"top_p": 0.8, "repetition_penalty": 1.2})
    assert top_p.sampling_kwargs() == {"temperature": 1.0, "top_p": 0.8, "repetition_penalty": 1.2,
                                       "presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert get_strategy("greedy").from_dict({}).sampling_kwargs()["temperature"] == 0.0
    assert get_strategy("min_p").from_dict({"min_p": 0.05}).sampling_kwargs()["min_p"] == 0.05
    assert get_strategy("top_k").from_dict({"top_k": 7}).sampling_kwargs()["top_k"] == 7


@pytest.mark.parametrize("name,params,message", [
    ("top_p", {"top_p": 0}, "top_p must be in (0, 1], got 0"),
    ("top_k", {"top_k": 0}, "top_k must be in [1, inf), got 0"),
    ("top_k", {"top_k": 2.5}, "top_k must be an integer, got 2.5"),
    ("temperature", {"temperature": -1}, "temperature must be in (0, inf), got -1"),
    ("greedy", {"repetition_penalty": 0}, "repetition_penalty must be in (0, inf), got 0"),
    ("min_p", {"presence_penalty": 3}, "presence_penalty must be in [-2, 2], got 3"),
])
def test_param_errors_name_field_range_and_value(name, params, message):
    from harness.errors import ParamError
    with pytest.raises(ParamError) as e:
        get_strategy(name).from_dict(params)
    assert str(e.value) == message


def test_import_light():
    import subprocess
    import sys
    code = ("import sys, harness, harness.config, harness.registry, strategies, strategies.base, harness.cli;"
            "harness.cli.build_parser();"
            "bad=[m for m in ('vllm','torch','ray') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
