"""Security rules of the code base (issue 10): nothing evaluates or unpickles data or model output, no shell
commands, YAML read safely, and output file names never come from document content."""

from __future__ import annotations

import re

import pytest

from pipelines.curate import shard_name
from tests.conftest import REPO

FORBIDDEN = {
    r"(?<![.\w])eval\(": "eval of a string",
    r"\bexec\(": "exec of a string",
    r"\bpickle\.loads?\(": "unpickling",
    r"weights_only\s*=\s*False": "torch.load that unpickles code",
    r"\byaml\.(unsafe_)?load\(": "YAML that can build objects (use yaml.safe_load)",
    r"shell\s*=\s*True": "a shell command line",
    r"\bmarshal\.loads?\(": "unmarshalling",
}


@pytest.mark.parametrize("pattern, what", FORBIDDEN.items())
def test_no_code_execution_from_data(pattern, what):
    hits = []
    for folder in ("operators", "pipelines", "training", "model", "benchmarks", "scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(pattern, line) and not line.lstrip().startswith("#"):
                    hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, f"{what}:\n" + "\n".join(hits)


@pytest.mark.parametrize("path", [
    "../../etc/passwd", "s3://bucket/../../x.warc.gz", "/data/a b;rm -rf ~.warc.gz", "https://evil.example/%2e%2e/x",
    "C:\\windows\\system32\\x.warc.gz", "/data/" + "x" * 500 + ".warc.gz", "/data/\x00nul.warc.gz", "/data/.warc.gz",
    "/data/.tmp-abc.warc.gz", "/data/...warc.gz",
])
def test_shard_names_are_safe_file_names(path):
    """Shard files are named from the input path (never from URLs or text inside documents), sanitised to
    [A-Za-z0-9._-], bounded in length, and unique per path."""
    name = shard_name(path)
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,90}", name), name
    assert not name.startswith(".")  # hidden names are skipped by listings, and ".tmp-*" are unfinished writes
    assert shard_name(path + "2") != name
