"""Overrides from config files and --name=value, derived constants, and their errors."""

import pytest

import hyperparams
from config import ConfigError, load_config, validate
from models import MODELS
from tests.conftest import run_script


def test_defaults_are_the_original_protocol():
    cfg = load_config([])
    assert (cfg.BATCH_SIZE, cfg.LR, cfg.MOMENTUM, cfg.WEIGHT_DECAY, cfg.LARS_WEIGHT_DECAY) == (128, 0.05, 0.9, 5e-4, 5e-3)
    assert (cfg.TRUST_COEF, cfg.WARMUP_EPOCHS, cfg.WARMUP_MULTIPLIER, cfg.POLY_POWER) == (0.1, 5, 2.0, 2.0)
    assert (cfg.END_LR, cfg.NUM_EPOCHS, cfg.MODEL, cfg.HE_INIT) == (1e-5, 200, "resnet50_imagenet", True)
    validate(cfg, 1, tuple(MODELS))


def test_derived_constants_follow_k():
    cfg = load_config(["--k=8"])
    assert (cfg.BATCH_SIZE, cfg.LR, cfg.END_LR) == (1024, 0.4, 8e-5)


def test_batch_size_alone_sets_k_and_scales_the_lr():
    cfg = load_config(["--BATCH_SIZE=512"])
    assert (cfg.K, cfg.LR, cfg.END_LR) == (4, 0.2, 4e-5)


def test_explicit_values_are_kept_when_k_changes():
    cfg = load_config(["--k=4", "--lr=0.05", "--end_lr=1e-5"])
    assert (cfg.BATCH_SIZE, cfg.LR, cfg.END_LR) == (512, 0.05, 1e-5)


def test_values_are_literals_or_bare_strings_and_ints_widen_to_float():
    cfg = load_config(["--model=resnet20", "--data_dir=/some/where", "--train_subset=500",
                       "--with_lars=True", "--lr=1", "--micro_batch_size=None"])
    assert (cfg.MODEL, cfg.DATA_DIR, cfg.TRAIN_SUBSET, cfg.WITH_LARS) == ("resnet20", "/some/where", 500, True)
    assert cfg.LR == 1.0 and isinstance(cfg.LR, float)


def test_config_file_sees_settings_and_overrides_apply_after_it(tmp_path):
    preset = tmp_path / "preset.py"
    preset.write_text("K = 2\nLR = BASE_LR * 3\nMODEL = 'resnet20'\nhelper = 1\n")
    cfg = load_config([str(preset), "--model=resnet32"])
    assert (cfg.BATCH_SIZE, cfg.LR, cfg.MODEL) == (256, pytest.approx(0.15), "resnet32")


@pytest.mark.parametrize("argv, match", [
    (["--no_such_setting=1"], "no_such_setting"),
    (["--batch_size=1.5"], "BATCH_SIZE must be int"),
    (["--with_lars=1"], "WITH_LARS must be bool"),
    (["--lr=fast"], "LR must be float"),
    (["--train_subset=all"], "TRAIN_SUBSET must be int or None"),
    (["--lr"], "--name=value"),
    (["missing_preset.py"], "missing_preset.py"),
])
def test_bad_overrides_name_the_setting(argv, match):
    with pytest.raises(ConfigError, match=match):
        load_config(argv)


def test_unknown_name_in_a_config_file(tmp_path):
    preset = tmp_path / "typo.py"
    preset.write_text("BACTH_SIZE = 256\n")
    with pytest.raises(ConfigError, match="BACTH_SIZE"):
        load_config([str(preset)])


def test_every_constant_is_documented_with_a_comment():
    source = open(hyperparams.__file__).read().splitlines()
    for name in (n for n in vars(hyperparams) if n.isupper()):
        line = next(line for line in source if line.startswith(name))
        assert "#" in line, f"{name} has no comment"


def test_cli_error_is_one_line_and_exit_status_2():
    result = run_script("train.py", "--batch_sise=256")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "batch_sise" in result.stderr


def test_a_preset_sees_the_batch_size_override_wherever_it_stands(tmp_path):
    preset = tmp_path / "attempt.py"
    preset.write_text("LR = 0.05\nWARMUP_MULTIPLIER = 2.0 * K\n")
    for argv in ([str(preset), "--batch_size=1024"], ["--batch_size=1024", str(preset)]):
        cfg = load_config(argv)
        assert (cfg.K, cfg.LR, cfg.WARMUP_MULTIPLIER, cfg.END_LR) == (8, 0.05, 16.0, 8e-5)
        assert type(cfg.BATCH_SIZE) is int


def test_overrides_win_over_config_files_even_inside_them(tmp_path):
    preset = tmp_path / "p.py"
    preset.write_text("K = 2\nLR = BASE_LR * K * 10\n")
    cfg = load_config([str(preset), "--k=4"])
    assert (cfg.K, cfg.BATCH_SIZE, cfg.LR) == (4, 512, pytest.approx(2.0))
    assert type(cfg.BATCH_SIZE) is int


def test_k_and_batch_size_are_one_setting_and_the_later_level_wins(tmp_path):
    preset = tmp_path / "k4.py"
    preset.write_text("K = 4\n")
    assert load_config([str(preset), "--batch_size=1024"]).K == 8, "an override wins over the file's K"
    other = tmp_path / "b256.py"
    other.write_text("BATCH_SIZE = 256\n")
    assert load_config([str(preset), str(other)]).K == 2, "a later file's BATCH_SIZE replaces an earlier K"
    assert load_config(["--k=4", "--batch_size=512"]).BATCH_SIZE == 512, "agreeing values are fine"
    with pytest.raises(ConfigError, match="contradict"):
        load_config(["--k=2", "--batch_size=512"])


def test_comprehensions_and_functions_in_a_config_file_see_the_settings(tmp_path):
    preset = tmp_path / "grid.py"
    preset.write_text("def scaled(x):\n    return x * K\n\nSWEEP_PEAK_LRS = [scaled(lr) / TRUST_COEF for lr in (0.01, 0.02)]\n")
    cfg = load_config([str(preset), "--k=2", "--trust_coef=0.5"])
    assert cfg.SWEEP_PEAK_LRS == [pytest.approx(0.04), pytest.approx(0.08)]
