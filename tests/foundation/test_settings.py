import tomllib

from engine.settings import Settings, load_settings, save_settings, to_toml


def test_load_when_no_file_then_defaults_and_no_errors(tmp_path):
    r = load_settings(tmp_path / "settings.toml")
    assert r.ok and r.settings == Settings() and not r.existed


def test_load_when_bad_values_then_defaults_for_those_keys_errors_name_them_and_file_is_kept(tmp_path):
    p = tmp_path / "settings.toml"
    text = '[general]\ntheme = "purple"\nseed = 3\ntypo_key = 1\n[oms]\napproval_expiry_s = -5\n'
    p.write_text(text)
    r = load_settings(p)
    keys = {e.key for e in r.errors}
    assert keys == {"general.theme", "general.typo_key", "oms.approval_expiry_s"}
    assert "unknown setting" in next(str(e) for e in r.errors if e.key == "general.typo_key")
    assert r.settings.general.seed == 3  # the good values still apply
    assert r.settings.general.theme == "dark"
    assert p.read_text() == text  # never overwritten
    assert r.backup_path is not None and r.backup_path.read_text() == text


def test_load_when_file_is_not_toml_then_defaults_and_backup(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text("[general\nthis is not toml")
    r = load_settings(p)
    assert r.settings == Settings()
    assert r.errors[0].key == "<file>" and "TOML" in r.errors[0].message
    assert r.backup_path.read_text() == p.read_text()
    r2 = load_settings(p)
    assert r2.backup_path != r.backup_path  # a second bad load never overwrites the first copy


def test_load_when_section_has_wrong_type_then_defaults_for_section(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text('general = "oops"\n')
    r = load_settings(p)
    assert r.settings.general == Settings().general
    assert any(e.key == "general" for e in r.errors)


def test_save_then_load_round_trips(tmp_path):
    s = Settings.model_validate({"general": {"theme": "light", "seed": 11}})
    p = save_settings(s, tmp_path / "cfg" / "settings.toml")
    assert tomllib.loads(p.read_text())["general"]["theme"] == "light"
    assert load_settings(p).settings == s
    assert "[general]" in to_toml(s)
