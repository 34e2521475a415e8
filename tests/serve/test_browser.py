"""`sift serve` driven in real headless Chromium (Debian's chromium + chromium-driver, installed by .ci/run):
open the job, see the funnel, look up a removed page and read why, browse a document shard and a token shard,
and watch the funnel of a running job update without a reload."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from tests.serve.conftest import add_shard_stats, make_live_copy
from tests.serve.helpers import browser_available, chromium, serve_in_thread

pytestmark = [pytest.mark.ray]

if not browser_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: .ci/run installs Debian's chromium and chromium-driver")
    pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)", allow_module_level=True)


@pytest.fixture(scope="module")
def site(runs_root: Path):
    with serve_in_thread(str(runs_root)) as base, chromium() as driver:
        yield base, driver


def _wait(driver, condition, timeout: float = 15):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the live view replaces table rows while they are read: such a read is retried
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def _cells(driver, table_id: str) -> dict[str, list[str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr[data-stage]")
    return {r.get_attribute("data-stage"): [td.text for td in r.find_elements(By.TAG_NAME, "td")] for r in rows}


def test_open_the_job_and_see_the_funnel(site, runs_root):
    from selenium.webdriver.common.by import By

    base, driver = site
    driver.get(base + "/")
    link = driver.find_element(By.LINK_TEXT, "job")
    assert "finished" in driver.find_element(By.CSS_SELECTOR, 'tr[data-run="job"]').text
    link.click()
    _wait(driver, lambda d: d.find_elements(By.ID, "funnel"))
    funnel = _cells(driver, "funnel")
    stats = json.loads((runs_root / "job" / "curate" / "stats.json").read_text())["stats"]
    assert funnel["langid"][1] == f"{stats['langid/in']:,}" and funnel["langid"][2] == f"{stats['langid/out']:,}"
    assert f"wrong_language ({stats['langid/drop_wrong_language']:,})" in funnel["langid"][5]
    assert {"read", "gopher", "exact_dedup", "line_dedup", "tokenize"} <= set(funnel)
    # the plots of `sift stats` are in the page and have loaded
    images = driver.find_elements(By.CSS_SELECTOR, "#plots img")
    assert len(images) >= 5
    assert all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img) for img in images)


def test_look_up_a_removed_page_and_see_why(site, runs_root):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, driver = site
    excluded = pads.dataset(runs_root / "job" / "curate" / "exclusions", format="parquet").to_table().to_pylist()
    page = next(e for e in excluded if e["stage"] == "gopher")
    evidence = json.loads(page["evidence"])
    driver.get(base + "/runs/job")
    box = driver.find_element(By.CSS_SELECTOR, "form.lookup input[name=q]")
    box.send_keys(page["url"], Keys.ENTER)
    _wait(driver, lambda d: d.find_elements(By.ID, "lookup-summary"))
    cards = driver.find_elements(By.CSS_SELECTOR, ".result[data-status=removed]")
    assert cards
    text = cards[0].text
    assert "removed by gopher" in text and page["reason"] in text
    assert f"value\n{evidence['value']}" in text and f"limit\n{evidence['limit']}" in text


def test_browse_a_document_shard_and_a_token_shard(site, runs_root):
    from selenium.webdriver.common.by import By

    base, driver = site
    driver.get(base + "/runs/job/shards")
    link = driver.find_element(By.CSS_SELECTOR, 'table.doc-shards[data-stage="dedup"] a')
    shard = link.text
    link.click()
    _wait(driver, lambda d: d.find_elements(By.ID, "documents"))
    rows = driver.find_elements(By.CSS_SELECTOR, "#documents tr")[1:]
    docs = pads.dataset(runs_root / "job" / "dedup" / "documents" / f"{shard}.parquet", format="parquet").to_table()
    assert len(rows) == min(20, docs.num_rows) and docs.num_rows > 0
    assert docs.column("url")[0].as_py() in rows[0].text
    rows[0].find_element(By.CSS_SELECTOR, "td a").click()  # the full document
    _wait(driver, lambda d: d.find_elements(By.ID, "text"))
    assert driver.find_element(By.ID, "text").text.strip() == docs.column("text")[0].as_py().strip()

    driver.get(base + "/runs/job/shards")
    driver.find_element(By.CSS_SELECTOR, "#token-shards a").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".token-doc"))
    decoded = driver.find_elements(By.CSS_SELECTOR, ".token-doc .decoded")
    texts = {r["doc_id"]: r["text"] for r in pads.dataset(runs_root / "job" / "dedup" / "documents").to_table().to_pylist()}
    first_words = [t.split()[:8] for t in texts.values()]
    assert decoded and all(d.text.split()[:8] in first_words for d in decoded)


def test_the_funnel_of_a_running_job_updates_live(site, runs_root):
    from selenium.webdriver.common.by import By

    base, driver = site
    live = make_live_copy(runs_root, "live-browser", shards_done=1)
    driver.get(base + "/runs/live-browser")
    assert driver.find_element(By.ID, "run-status").text == "running"
    before = _cells(driver, "funnel")["read"][1]
    first = json.loads(next((live / "curate" / "shard_stats").glob("*.json")).read_text())
    assert before == f"{first['read/in']:,}"
    second = add_shard_stats(runs_root, live, 1)  # another worker finishes a shard
    want = f"{first['read/in'] + second['read/in']:,}"
    _wait(driver, lambda d: _cells(d, "funnel").get("read", [None, None])[1] == want)  # no reload: the page polls
