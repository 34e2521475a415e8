"""Build the labelled data for the bundled quality classifier from the shared real corpora.

    python scripts/build_quality_data.py ../shared/data runs/quality.jsonl
    sift train-classifier --input runs/quality.jsonl --positive-label hq --quantize \\
        --output operators/resources/quality.ftz

Positives `hq`: the 169 well-edited article bodies of text/quality/quality_seed.jsonl and the
WikiText-2 valid+test articles (tokenisation artefacts undone). Negatives `cc`: the 697 raw Common
Crawl WET documents of quality_seed.jsonl and the pages of a real CC-MAIN-2020-34 WARC excerpt
(resiliparse's test file, mostly spam), extracted with sift's own extractor.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.extract import extract_text  # noqa: E402
from operators.warc import read_warc_rows  # noqa: E402


def wikitext_articles(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    # top-level headings look like ' = Title = ' on their own line
    parts = re.split(r"\n \= [^=\n]+ \= \n", "\n" + text)
    articles = []
    for part in parts:
        part = part.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".").replace("<unk>", "")
        part = re.sub(r"\n \=+ [^=\n]+ \=+ \n", "\n", part)  # sub-headings
        if len(part.split()) >= 200:
            articles.append(part.strip())
    return articles


def main(shared: str, out: str) -> None:
    shared_dir = Path(shared)
    rows = []
    for line in (shared_dir / "text/quality/quality_seed.jsonl").read_text(encoding="utf-8").split("\n"):
        if line.strip():
            d = json.loads(line)
            rows.append({"text": d["text"], "label": "hq" if d["label"] == "hq" else "cc", "source": f"quality_seed:{d['label']}"})
    for name in ("wikitext-2-valid.txt", "wikitext-2-test.txt"):
        rows += [{"text": a, "label": "hq", "source": f"wikitext:{name}"} for a in wikitext_articles(shared_dir / "text/lm" / name)]
    for r in read_warc_rows(str(shared_dir / "warc/real/resiliparse-tests/warcfile.warc.gz"))[0]:
        text = extract_text(r.html)
        if len(text.split()) >= 20:
            rows.append({"text": text, "label": "cc", "source": "cc-main-2020-34-excerpt"})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {}
    for row in rows:
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    print(out, len(rows), counts)


if __name__ == "__main__":
    main(*sys.argv[1:3])
