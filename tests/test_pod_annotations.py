"""A pod's settings by annotation: the downward API's file format and their place among the
configuration's layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import pod_annotations
from exporter.cli import _config, build_parser
from exporter.config import ConfigError, load_config
from exporter.options import OPTIONS


def test_the_downward_api_format_is_read_as_go_quotes_it() -> None:
    # Lines as the kubelet writes them: sorted keys, each value quoted as Go's %q does (\" \\
    # \n \t escaped, control bytes as \x.., other printable characters kept as they are).
    text = (
        'kubectl.kubernetes.io/last-applied-configuration="{\\"kind\\":\\"Pod\\"}\\n"\n'
        'note="tab\\there, bell\\a, del\\x7f, café, \\u2028"\n'
        'vllm-profile-exporter/max-num-seqs="256"'
    )
    found = pod_annotations.parse(text)
    assert found == {
        "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"Pod"}\n',
        "note": "tab\there, bell\a, del\x7f, café, \u2028",
        "vllm-profile-exporter/max-num-seqs": "256",
    }
    assert pod_annotations.settings(found) == {"max-num-seqs": "256"}
    assert pod_annotations.parse("") == {}


@pytest.mark.parametrize(
    "text",
    ["key=unquoted", 'key="open', '="no key"', 'a="1" b="2"', 'key="bad \\" end'],
)
def test_a_line_not_in_the_format_is_refused_with_its_number(text: str) -> None:
    with pytest.raises(pod_annotations.AnnotationError, match="line 2"):
        pod_annotations.parse('ok="1"\n' + text)


def test_a_settings_value_is_bounded_and_others_are_not_read() -> None:
    long = "x" * (pod_annotations.MAX_VALUE + 1)
    assert pod_annotations.settings({"other/huge": long}) == {}
    with pytest.raises(pod_annotations.AnnotationError, match="vllm-profile-exporter/dtype"):
        pod_annotations.settings({"vllm-profile-exporter/dtype": long})


def test_an_annotation_wins_over_the_releases_flag_env_and_file() -> None:
    flags = {"max_num_seqs": 64, "cost_per_hour": 3.0}
    env = {"VLLM_PROFILE_PRICE": "spot", "VLLM_PROFILE_DTYPE": "bf16"}
    file_values = {"slo-ttft": "2s"}
    pod = {"max-num-seqs": "256", "price": "on-demand", "slo-ttft": "500ms"}
    cfg = load_config(flags, env, file_values, pod)
    assert cfg.max_num_seqs == 256  # the pod's, not the flag's 64
    assert cfg.price == "on-demand"  # the pod's, not the environment's spot
    assert cfg.slo_ttft == 0.5  # the pod's, not the file's 2 s
    assert cfg.cost_per_hour == 3.0 and cfg.dtype == "bf16"  # not annotated: the release's
    plain = load_config(flags, env, file_values)
    assert (plain.max_num_seqs, plain.price, plain.slo_ttft) == (64, "spot", 2.0)


def test_an_empty_variable_is_unset_as_a_missing_annotation_writes_it() -> None:
    # A downward-API variable for an annotation the pod lacks is "": the next layer decides.
    env = {"VLLM_PROFILE_MAX_NUM_SEQS": "", "VLLM_PROFILE_PRICE": "", "TENSOR_PARALLEL_SIZE": ""}
    cfg = load_config({}, env, {"max-num-seqs": 32})
    assert (cfg.max_num_seqs, cfg.price, cfg.tp, cfg.tp_source) == (32, "on-demand", None, "")


def test_only_per_pod_settings_may_be_annotated() -> None:
    # A pod's owner may describe the pod, not move the listener or its credentials.
    with pytest.raises(ConfigError, match="vllm-profile-exporter/web.config.file: not a per-pod"):
        load_config({}, {}, {}, {"web.config.file": "/tmp/x"})
    with pytest.raises(ConfigError, match="vllm-profile-exporter/no-such-flag: not a per-pod"):
        load_config({}, {}, {}, {"no-such-flag": "1"})
    with pytest.raises(ConfigError, match="pod annotation vllm-profile-exporter/max-num-seqs"):
        load_config({}, {}, {}, {"max-num-seqs": "lots"})
    per_pod = {o.flag for o in OPTIONS if o.per_pod}
    assert "web.listen-address" not in per_pod and "max-num-seqs" in per_pod


def test_the_cli_reads_the_file_at_every_configuration(tmp_path: Path) -> None:
    # The kubelet's layout: the file is a symlink into a directory it swaps atomically.
    data = tmp_path / "..2026_12_07_00_00_00.1"
    data.mkdir()
    (data / "annotations").write_text('vllm-profile-exporter/tensor-parallel-size="4"\n')
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "annotations").symlink_to("..data/annotations")
    args = build_parser().parse_args(
        ["serve", "--pod-annotations", str(tmp_path / "annotations"), "--tensor-parallel-size=2"]
    )
    cfg = _config(args, {})
    assert (cfg.tp, cfg.tp_source) == (4, "flag")  # declared: by the pod
    (data / "annotations").write_text('vllm-profile-exporter/tensor-parallel-size="four"\n')
    with pytest.raises(ConfigError, match="tensor-parallel-size: invalid value 'four'"):
        _config(args, {})
    (data / "annotations").write_bytes(b'a="\xff"\n')
    with pytest.raises(ConfigError, match="--pod-annotations"):
        _config(args, {})
    (data / "annotations").write_text("x" * (pod_annotations.MAX_BYTES + 1))
    with pytest.raises(ConfigError, match="--pod-annotations"):
        _config(args, {})
