import pytest

from proxy.config import ConfigError, load_config, parse_config


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


BASE = "providers:\n  - name: g\n    type: gemini\n    keys: [k1]\n"


def test_substitution_with_defaults_and_comments(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            "# ${NOT_SET} in a comment is ignored\nserver:\n"
            "  port: ${PORT:-5000}\n  admin_token: ${TOKEN}\n" + BASE,
        ),
        env={"TOKEN": "t0k-0123456789abcdef"},
    )
    assert cfg.server.port == 5000 and cfg.server.admin_token == "t0k-0123456789abcdef"


def test_unset_variable_names_its_path(tmp_path):
    with pytest.raises(ConfigError, match=r"^server.admin_token: environment variable TOKEN is not set"):
        load_config(write(tmp_path, "server:\n  admin_token: ${TOKEN}\n" + BASE), env={})


@pytest.mark.parametrize(
    "text,path",
    [
        ("server: {port: 70000}\n" + BASE, "server.port"),
        ("server: {portt: 1}\n" + BASE, "server.portt: unknown option"),
        (
            "providers:\n  - {name: g, type: gemini, keys: [a, {key: b, weight: x}]}\n",
            "providers[0].keys[1].weight",
        ),
        ("providers:\n  - {name: g, type: nope}\n", "providers[0].type: must be one of"),
        ("providers:\n  - {name: g, type: gemini}\n", "providers[0].keys: provider type gemini needs"),
        (
            BASE + "models:\n  - {name: m, targets: [{provider: zz, model: x}]}\n",
            "models[0].targets[0].provider",
        ),
        (BASE + "models:\n  - {name: m, targets: []}\n", "models[0].targets: at least one"),
        ("providers: {}\n", "providers: expected a list"),
        (
            "providers:\n  - {name: g, type: gemini, keys: [a, b, {key: a}]}\n",
            "providers[0].keys[2]: the same key",
        ),
        ("server: [1]\n" + BASE, "server: expected a mapping"),
    ],
)
def test_errors_name_the_path(text, path, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert str(info.value).startswith(path.split(":")[0]) and path in str(info.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "server: [\n"), env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", env={})


def test_key_forms_and_base_url_default():
    cfg = parse_config(
        {
            "providers": [
                {"name": "g", "type": "gemini", "keys": ["a", {"key": "b", "weight": 2, "label": "team"}]},
                {"name": "o", "type": "openai", "keys": "x, y ,"},
            ]
        }
    )
    g, o = cfg.providers
    assert [k.key for k in g.keys] == ["a", "b"] and g.keys[1].weight == 2 and g.keys[1].label == "team"
    assert g.base_url == "https://generativelanguage.googleapis.com/v1beta"
    assert [k.key for k in o.keys] == ["x", "y"]


def test_default_config_uses_gemini_keys_or_mock():
    with_keys = load_config(env={"GEMINI_API_KEYS": "k1,k2"})
    assert [p.name for p in with_keys.providers] == ["gemini"]
    assert len(with_keys.providers[0].keys) == 2
    assert all(t.provider == "gemini" for m in with_keys.models for t in m.targets)
    without = load_config(env={})
    assert [p.type for p in without.providers] == ["mock"]
    assert any("built-in mock" in n for n in without.notices)
    assert without.model("gemini-2.5-flash").targets[0].provider == "mock"
