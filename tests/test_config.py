"""Configuration precedence: flag > environment > file > default."""

from __future__ import annotations

import pytest

from exporter.config import ConfigError, load_config


def test_precedence() -> None:
    file = {"vllm-url": "http://file:1", "horizon": "30s", "max-num-seqs": 8}
    env = {"VLLM_PROFILE_VLLM_URL": "http://env:2", "VLLM_PROFILE_HORIZON": "20s"}
    flags = {"vllm_url": "http://flag:3"}
    cfg = load_config(flags, env, file)
    assert cfg.vllm_url == "http://flag:3"  # flag beats env and file
    assert cfg.horizon == 20.0  # env beats file
    assert cfg.max_num_seqs == 8  # file beats default
    assert cfg.poll_interval == 0.25  # default
    assert (cfg.poll_interval, cfg.calm_poll_interval, cfg.dcgm_poll_interval) == (0.25, 1.0, None)
    assert cfg.poll_deadline > cfg.poll_interval  # a slow answer is late, not down


def test_dotted_flag_env_twin() -> None:
    cfg = load_config({}, {"VLLM_PROFILE_WEB_LISTEN_ADDRESS": "127.0.0.1:1"}, {})
    assert cfg.web_listen_address == "127.0.0.1:1"


def test_unknown_file_key_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown key 'vllm_url'"):
        load_config({}, {}, {"vllm_url": "x"})


def test_env_error_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="VLLM_PROFILE_POLL_INTERVAL: invalid value 'x'"):
        load_config({}, {"VLLM_PROFILE_POLL_INTERVAL": "x"}, {})


def test_cadence_options_and_their_bounds() -> None:
    cfg = load_config(
        {"calm_poll_interval": "500ms"}, {"VLLM_PROFILE_DCGM_POLL_INTERVAL": "15s"}, {}
    )
    assert (cfg.calm_poll_interval, cfg.dcgm_poll_interval) == (0.5, 15.0)
    for flags in ({"calm_poll_interval": "0s"}, {"calm_poll_interval": "2m"},
                  {"dcgm_poll_interval": "10m"}):  # fmt: skip
        with pytest.raises(ConfigError) as e:
            load_config(flags, {}, {})
        assert str(e.value).startswith("--" + next(iter(flags)).replace("_", "-") + ": invalid")
