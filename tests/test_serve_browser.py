"""The page of `baby serve` in a real browser: Debian's headless Chromium (/usr/bin/chromium, which .ci/run
installs with apt-get) driven by Playwright. The page loads without a console error, a run is picked, generation
streams token by token and stops on Stop, a click on a token shows its distributions and the attention of every
layer and head, and the prompt's attention map switches heads. A screenshot goes to the test's temp dir."""

import pathlib
import shutil

import pytest

CHROMIUM = pathlib.Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"no browser: {CHROMIUM} is missing; `.ci/run` installs it as root "
                "(apt-get update && apt-get install -y chromium)", allow_module_level=True)
pytest.importorskip("starlette", reason="baby serve needs the serve extra: pip install -e \".[serve]\"")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests drive Chromium with the "
                               "playwright package of the test extra: pip install -e \".[test]\"")

from live_server import LiveServer  # noqa: E402

from littlebaby.runs import run_ids  # noqa: E402
from littlebaby.serve.app import Limits  # noqa: E402

# Chromium as the machine notes start it: headless, no sandbox (root), and no background connections, which a
# closed network refuses (and which would otherwise try to reach the vendor's hosts at every start)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def live(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "runs"
    shutil.copytree(trained, out)
    server = LiveServer(out, Limits(max_tokens=1_000_000))   # room for a generation that only Stop ends
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, live):
    """A fresh page on the server, with every console error and uncaught exception collected in page.errors."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    opened.errors = []
    opened.on("console", lambda message: message.type == "error" and opened.errors.append(message.text))
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    opened.goto(live.url)
    yield opened
    context.close()


def pick_the_run(page, live):
    (guid,) = run_ids(live.out)
    page.click(f"#runs-table tr[data-guid='{guid}']")
    page.wait_for_selector("#runs-table tr.selected")
    page.wait_for_selector("#run-detail:not([hidden])")
    return guid


def test_generate_then_click_a_token_to_see_why(page, live, tmp_path):
    guid = pick_the_run(page, live)
    assert page.locator("#loss-curve polyline").count() == 3          # batch losses, train and val evals
    page.fill("#prompt", "ANNE:")
    page.fill("#max-tokens", "40")
    page.fill("#top-k", "5")
    page.fill("#seed", "11")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#gen-status').textContent.startsWith('done')")
    assert page.locator("#output .tok.prompt").count() == 5
    assert page.locator("#output .tok.sampled").count() == 40
    shown = page.locator("#output").inner_text().replace("\u21b5", "")
    done = live.events(f"/api/runs/{guid}/generate", {"prompt": "ANNE:", "max_tokens": 40, "top_k": 5, "seed": 11})
    assert shown == done[-1][1]["text"]                      # what streamed onto the page is what the seed gives

    page.click("#output .tok.sampled >> nth=20")
    page.wait_for_selector("#why-body:not([hidden])")
    assert 1 <= page.locator("#dist-sampled li").count() <= 5   # top-k 5: at most five tokens had any chance
    assert page.locator("#dist-sampled li.chosen").count() == 1  # the token is among those it was drawn from
    assert page.locator("#dist-raw li").count() == 10
    assert page.locator("#why-attention .strip").count() == 2    # 1 layer x 2 heads
    assert page.locator("#lens tbody tr").count() == 2           # embeddings, block 0

    page.click("#map-heads button >> nth=1")
    page.wait_for_selector("#map-heads button.on[data-index='1']")
    assert page.locator("#att-canvas").is_visible()
    screenshot = tmp_path / "serve.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert page.errors == []


def test_stop_ends_the_stream_and_the_generation(page, live):
    pick_the_run(page, live)
    page.fill("#prompt", "BEN:")
    page.fill("#max-tokens", "1000000")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#output .tok.sampled').length >= 10")
    page.click("#stop")
    page.wait_for_function("document.querySelector('#gen-status').textContent.startsWith('stopped')")
    assert live.wait_idle(10), "the server went on generating after Stop"
    assert page.locator("#output .tok.sampled").count() < 1_000_000
    assert page.is_enabled("#generate")
    assert page.errors == []
