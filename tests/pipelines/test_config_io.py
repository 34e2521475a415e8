"""Config resolution (defaults <- YAML <- --set) and input listing / atomic output, without Ray."""

from __future__ import annotations

import gzip
import os

import pytest

from pipelines.config import build, config_hash, config_help, field_docs, parse_set, resolve
from pipelines.curate import CurateConfig, shard_name
from pipelines.io import OutputDir, list_inputs
from pipelines.stats import balance_errors, funnel, merge
from tests.conftest import SAMPLE


def test_yaml_then_set_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("output: from-yaml\nbatch_size: 64\nread:\n  allowed_http_statuses: [200, 203]\n")
    cfg = resolve(CurateConfig, str(y), parse_set(["batch_size=8", "extract.main_content=false", "input=[a, b]"]))
    assert cfg.output == "from-yaml"
    assert cfg.batch_size == 8
    assert cfg.read.allowed_http_statuses == (200, 203)
    assert cfg.extract.main_content is False
    assert cfg.input == ("a", "b")


@pytest.mark.parametrize("overrides, message", [
    ({"nope": 1}, "unknown config key 'nope'"),
    ({"read.nope": 1}, "unknown config key 'read.nope'"),
    ({"batch_size": "many"}, "batch_size: expected an integer"),
    ({"keep_html": "yes please"}, "keep_html: expected true/false"),
    ({"read": 3}, "read: expected a mapping"),
    ({"extract.fallback_max_share": True}, "expected a number"),
    ({"extract.time_limit_s": -1}, "extract.time_limit_s: must be >= 0, got -1"),
    ({"read.max_html_bytes": -5}, "read.max_html_bytes: must be >= 0"),
    ({"num_cpus": -2}, "num_cpus: must be >= 0"),
])
def test_bad_config_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve(CurateConfig, None, overrides)


def test_set_needs_key_value():
    with pytest.raises(ValueError, match="key=value"):
        parse_set(["justakey"])


def test_output_hash_ignores_execution_fields():
    a = CurateConfig(output="x", num_cpus=1, batch_size=5)
    b = CurateConfig(output="y", num_cpus=8, batch_size=500)
    assert a.output_hash() == b.output_hash()
    c = build(CurateConfig, {"extract": {"drop_ui_lines": False}})
    assert c.output_hash() != a.output_hash()
    assert config_hash({"a": 1}) == config_hash({"a": 1}) != config_hash({"a": 2})


def test_list_inputs_dir_glob_file_listing(tmp_path):
    by_dir = list_inputs([str(SAMPLE)])
    assert len(by_dir) == 7 and all(p.endswith(".warc.gz") for p in by_dir)
    assert list_inputs([str(SAMPLE / "edge-*.warc.gz")]) == [str(SAMPLE / "edge-cases.warc.gz"), str(SAMPLE / "edge-truncated.warc.gz")]
    # duplicates across specs collapse; output is sorted
    assert list_inputs([str(SAMPLE), str(SAMPLE / "whirlwind.warc.gz")]) == by_dir
    listing = tmp_path / "warc.paths.gz"
    listing.write_bytes(gzip.compress(b"crawl-data/CC-MAIN-2024-22/segments/1/warc/a.warc.gz\n\ncrawl-data/b.warc.gz\n"))
    assert list_inputs([str(listing)], cc_base_url="s3://commoncrawl/") == [
        "s3://commoncrawl/crawl-data/CC-MAIN-2024-22/segments/1/warc/a.warc.gz",
        "s3://commoncrawl/crawl-data/b.warc.gz",
    ]


def test_list_inputs_errors(tmp_path):
    with pytest.raises(ValueError, match="no input"):
        list_inputs([])
    with pytest.raises(ValueError, match="matched no files"):
        list_inputs([str(tmp_path / "*.warc.gz")])
    (tmp_path / "notes.txt").write_text("not a warc")
    with pytest.raises(ValueError, match="matched no files"):
        list_inputs([str(tmp_path)])


def test_output_dir_atomic_write(tmp_path):
    out = OutputDir(str(tmp_path / "o"))
    out.check_writable()
    out.makedirs("d")
    out.write_json({"a": 1}, "d", "x.json")
    assert out.read_json("d", "x.json") == {"a": 1}
    assert out.list("d") == ["x.json"]
    assert not [n for n in os.listdir(tmp_path / "o" / "d") if n.startswith(".tmp")]


def test_shard_names_unique_and_readable():
    a, b = shard_name("/x/CC-MAIN-1.warc.gz"), shard_name("/y/CC-MAIN-1.warc.gz")
    assert a != b and a.startswith("CC-MAIN-1-") and b.startswith("CC-MAIN-1-")
    assert shard_name("s3://b/p/file.arc.gz").startswith("file-")


def test_stats_balance_and_funnel():
    shard1 = {"read/in": 10, "read/out": 4, "read/drop_not_html": 6, "extract/in": 4, "extract/out": 3, "extract/drop_empty": 1}
    shard2 = {"read/in": 2, "read/out": 2, "extract/in": 2, "extract/out": 2}
    total = merge([shard1, shard2])
    assert balance_errors(total) == []
    assert funnel(total, ["read", "extract"]) == [("read", 12, 6, {"not_html": 6}), ("extract", 6, 5, {"empty": 1})]
    assert balance_errors({"x/in": 3, "x/out": 1, "x/drop_a": 1}) == ["x: in=3 != out=1 + drops=1"]


@pytest.mark.parametrize("path", sorted((SAMPLE.parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_resolve(path):
    """Every YAML in configs/ is valid against the current config classes (a renamed field must not
    break the README's demo command)."""
    from pipelines.run import RunConfig
    from pipelines.tokenize import TokenizeConfig
    from training.align.grpo import AlignConfig
    from training.sweep import SweepConfig

    cls = (TokenizeConfig if path.name.endswith("-tokenize.yaml") else SweepConfig if path.name.startswith("sweep")
           else AlignConfig if path.name.startswith("align") else RunConfig if path.name.startswith("run-")
           else CurateConfig)
    cfg = resolve(cls, str(path))
    assert {CurateConfig: lambda: cfg.input, TokenizeConfig: lambda: cfg.tokenizer, SweepConfig: lambda: cfg.budgets,
            AlignConfig: lambda: cfg.task, RunConfig: lambda: cfg.stage_configs()["tokenize"].input}[cls]()


def test_lists_of_numbers_accept_yaml_1_1_exponents():
    """PyYAML reads 1.0e11 (no exponent sign) as a string; list[float] fields coerce every item."""
    from training.sweep import SweepConfig

    cfg = resolve(SweepConfig, None, parse_set(["budgets=[1.0e11, 3e11, 2.5e+12]"]))
    assert cfg.budgets == [1e11, 3e11, 2.5e12]
    with pytest.raises(ValueError, match="budgets: expected a number"):
        resolve(SweepConfig, None, parse_set(["budgets=[1e11, lots]"]))


def test_a_config_read_back_from_json_equals_the_original():
    """A run's pipeline.json writes mapping keys as strings (Gopher's n -> limit tables): building the config again
    from it gives the same config, and a key that is not a number is a clear error, not a crash inside a stage."""
    import json
    from dataclasses import asdict

    cfg = CurateConfig(output="x")
    again = build(CurateConfig, json.loads(json.dumps(asdict(cfg))))
    assert again == cfg
    assert again.gopher.max_top_ngram_char_frac == {2: 0.20, 3: 0.18, 4: 0.16}
    with pytest.raises(ValueError, match="gopher.max_top_ngram_char_frac key: expected an integer"):
        resolve(CurateConfig, None, {"gopher.max_top_ngram_char_frac": {"two": 0.2}})
    with pytest.raises(ValueError, match=r"gopher.max_dup_ngram_char_frac.5: expected a number"):
        resolve(CurateConfig, None, {"gopher.max_dup_ngram_char_frac": {"5": "high"}})


def test_the_job_driver_imports_no_torch():
    """`sift run` validates every stage's config up front, yet a curation driver does not load torch (~1.5 s):
    the training configs live in torch-free training.configs, re-exported where they run."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys, pipelines.run, pipelines.curate, pipelines.dedup, pipelines.tokenize; "
            "print(sorted(m for m in ('torch', 'triton') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    from training.align.grpo import COMMANDS, AlignConfig
    from training.configs import ALIGN_COMMANDS
    from training.configs import AlignConfig as Same
    from training.pretrain import TrainConfig

    assert tuple(COMMANDS) == ALIGN_COMMANDS and AlignConfig is Same and TrainConfig.__module__ == "training.configs"


def test_curate_hands_out_the_largest_files_first(tmp_path):
    from pipelines.curate import largest_first

    sizes = {"a.warc.gz": 10, "b.warc.gz": 300, "c.warc.gz": 20}
    for name, n in sizes.items():
        (tmp_path / name).write_bytes(b"x" * n)
    units = [{"path": str(tmp_path / n)} for n in sorted(sizes)] + [{"path": "s3://bucket/d.warc.gz"},
                                                                   {"path": str(tmp_path / "gone.warc.gz")}]
    order = [os.path.basename(u["path"]) for u in largest_first(units)]
    assert order == ["b.warc.gz", "c.warc.gz", "a.warc.gz", "d.warc.gz", "gone.warc.gz"]


def test_tokenizer_loads_once_per_process_until_its_files_change(tmp_path):
    import shutil

    from pipelines.tokenize import BUNDLED_GPT2, load_tokenizer

    assert load_tokenizer("gpt2") is load_tokenizer("gpt2")  # the driver and a local worker share one load
    copy = tmp_path / "tok"
    shutil.copytree(BUNDLED_GPT2, copy)
    first = load_tokenizer(str(copy))
    assert first is load_tokenizer(str(copy)) and first is not load_tokenizer("gpt2")
    (copy / "special_tokens.txt").write_text("<|endoftext|>\n<|pad|>\n")  # a new special token: a fresh load
    second = load_tokenizer(str(copy))
    assert second is not first and "<|pad|>" in second.special_ids and "<|pad|>" not in first.special_ids


def test_help_lists_every_set_key_with_its_default_and_docstring():
    """`--help` of each stage lists the keys `--set` accepts (nested configs dotted), each with its default and the
    first sentence of the field's docstring, read from the source; every listed key resolves."""
    from training.configs import TrainConfig

    docs = field_docs(TrainConfig)
    assert docs["zero1"].startswith("With several workers: shard the optimizer state across them (ZeRO-1). Each")
    zero1 = next(line for line in config_help(TrainConfig) if line.split()[0].startswith("zero1="))
    assert zero1.endswith("shard the optimizer state across them (ZeRO-1).")  # the first sentence only
    assert "steps" not in docs  # no docstring under that field
    lines = config_help(CurateConfig)
    keys = [line.split()[0].split("=", 1)[0] for line in lines]
    assert "extract.main_content" in keys and "pii.emails" in keys and "read.max_record_bytes" in keys
    assert len(keys) == len(set(keys))
    pii = next(line for line in lines if line.split()[0].startswith("pii.enabled="))
    assert pii.split()[0] == "pii.enabled=true" and "Run the maskers" in pii
    for line in lines:  # the default shown is the default: setting it back is accepted and changes nothing
        key, shown = line.split()[0].split("=", 1)
        if shown not in ("", '""', "null") and not shown.startswith(("[", "{")):
            assert resolve(CurateConfig, None, parse_set([f"{key}={shown}"])) == CurateConfig(), key


def test_config_file_errors_are_one_line(tmp_path):
    """A missing, unreadable or malformed --config file is a ValueError naming the file (and for YAML, the parser's
    problem and line), which the stage CLIs print as `error: ...` with exit code 2."""
    with pytest.raises(ValueError, match=f"^config file {tmp_path / 'nope.yaml'} not found$"):
        resolve(CurateConfig, str(tmp_path / "nope.yaml"))
    with pytest.raises(ValueError, match="is a directory"):
        resolve(CurateConfig, str(tmp_path))
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: x\nbatch_size: 3\n  extract: [\n")
    with pytest.raises(ValueError, match=r"^config file .*bad.yaml: mapping values are not allowed here at line 3, col"):
        resolve(CurateConfig, str(bad))
    bad.write_text('{"output": "x",\n "batch_size": 3\n')  # JSON is YAML: the same parser, the same kind of message
    with pytest.raises(ValueError, match=r"^config file .*bad.yaml: while parsing a flow mapping, expected .* at line 3, column 1$"):
        resolve(CurateConfig, str(bad))
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        resolve(CurateConfig, str(bad))
    with pytest.raises(ValueError, match=r"^--set batch_size: bad value '\[1,'"):
        parse_set(["batch_size=[1,"])


@pytest.mark.parametrize("setting, message", [
    ("langid.min_score=2", "error: langid.min_score must be in [0, 1] (a probability), got 2.0"),
    ("langid.prefix_confidence=-1", "error: langid.prefix_confidence must be in [0, 1] (a probability), got -1.0"),
    ("langid.max_chars=0", "error: langid.max_chars must be > 0, got 0"),
])
def test_a_nested_config_check_names_the_key_once(setting, message, tmp_path, capsys):
    from pipelines.curate import main as curate_main

    assert curate_main(["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.strip() == message
    with pytest.raises(ValueError, match=r"^curate\.langid\.min_score must be in \[0, 1\]"):
        from pipelines.run import RunConfig

        resolve(RunConfig, None, parse_set(["curate.langid.min_score=2"]))


def test_stage_clis_report_config_file_errors(tmp_path):
    """End to end in a real process: `error: ...` on stderr, exit code 2, no traceback."""
    import subprocess
    import sys

    from tests.conftest import REPO

    bad = tmp_path / "bad.yaml"
    bad.write_text("output: x\n  batch_size: 3\n")
    for command, config, expected in (("curate", tmp_path / "nope.yaml", f"error: config file {tmp_path / 'nope.yaml'} not found"),
                                      ("tokenize", bad, f"error: config file {bad}: mapping values are not allowed here at line 2")):
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", command, "--config", str(config), "--input", "x",
                               "--output", str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(expected) and "Traceback" not in done.stderr
