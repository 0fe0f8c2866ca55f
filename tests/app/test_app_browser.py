"""The page in headless Chromium (Playwright): Generate gives playable audio (an <audio> whose
source loads) and a spectrogram image; "Use these settings" fills the controls; the rho sweep gives
one captioned clip per rho and A/B two different clips, each of the requested length; cards say
stereo (with the width) or mono, as the Stereo switch asks. With PRESTO_SCREENSHOTS=1 it also saves
assets/screenshots/{main,rho_sweep,ab}.png
(off by default so CI does not rewrite committed files)."""

import os
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; see app/APT_PACKAGES.txt)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

from app.testing import serve  # noqa: E402
from presto_core.generate import DEFAULT_MODEL  # noqa: E402
from tests.factory import make_adapter, make_model_folder  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "assets" / "screenshots"
SAVE = os.environ.get("PRESTO_SCREENSHOTS") == "1"
TIMEOUT_MS = 90_000

pytestmark = pytest.mark.slow  # a real server and clients (or a browser): tens of seconds


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    # Screenshots show the embedded default (real audio); the checks run on a micro random model.
    adapters = []
    if SAVE and DEFAULT_MODEL.is_dir():
        model = DEFAULT_MODEL
    else:
        model = make_model_folder(tmp_path_factory.mktemp("browser_model"),
                                  variants=("base", "presto-l", "presto-s", "presto-ls"), default_variant="presto-ls",
                                  with_m2s=True)
        adapters = [(str(make_adapter(model, tmp_path_factory.mktemp("browser_adapter") / "calypso",
                                      name="calypso")), 1.0)]
    with serve(model, adapters=adapters) as (u, _, _):
        yield u


@pytest.fixture(scope="module")
def page(url):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(url, wait_until="load")
        pg.wait_for_selector("#generate-btn")
        yield pg
        browser.close()


def _shot(pg, name):
    if SAVE:
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _set_number(pg, elem_id, value):
    box = pg.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def _audio_loads(pg, selector):
    """Wait until the <audio> under ``selector`` has a src and its metadata loaded; returns duration (s)."""
    pg.wait_for_selector(f"{selector} audio[src]", state="attached")
    return pg.eval_on_selector(f"{selector} audio[src]", """a => new Promise((ok, bad) => {
        if (a.readyState >= 1) return ok(a.duration);
        a.addEventListener('loadedmetadata', () => ok(a.duration));
        a.addEventListener('error', () => bad('audio failed to load: ' + a.src));
        setTimeout(() => bad('audio metadata did not load in 30 s: ' + a.src), 30000);
    })""")


def test_generate_plays_audio_and_shows_spectrogram(page):
    page.fill("#prompt textarea", "warm lo-fi hip hop beat with Rhodes chords")
    _set_number(page, "duration", 4)
    page.click("#generate-btn")
    assert _audio_loads(page, "#clip-audio-0") == pytest.approx(4.0, abs=0.1)
    _audio_loads(page, "#clip-audio-1")  # two clips by default
    img = page.wait_for_selector("#clip-spec-0 img[src]")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img)
    latency = page.inner_text("#latency")
    assert "RTF" in latency and "expected ≈" in latency
    assert "≈" in page.inner_text("#eta")
    assert "stereo, width" in _card_text(page, "clip-audio-0")  # stereo by default when the model has m2s
    _shot(page, "main")
    # "Use these settings" copies the clip's seed into the (advanced) seed field.
    seed = int(latency.split("seed ")[1].split(" ")[0])
    page.get_by_role("button", name="Use these settings").first.click()
    page.get_by_text("Advanced", exact=True).click()
    page.wait_for_function(f"() => document.querySelector('#seed input')?.value == '{seed}'")


def _card_text(pg, audio_id):
    """The caption of the result card that holds the player ``audio_id``."""
    return pg.locator(f"xpath=//*[@id='{audio_id}']/ancestor::div[contains(@class, 'column')][1]").inner_text()


def _wait_card(pg, audio_id, text):
    """Wait until the card of ``audio_id`` says ``text`` (cards are rewritten when a result arrives;
    until then they show the previous one)."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while text not in _card_text(pg, audio_id):
        assert time.monotonic() < deadline, _card_text(pg, audio_id)
        pg.wait_for_timeout(250)


def test_stereo_switch_gives_mono_clips(page):
    page.get_by_role("tab", name="Generate").click()
    box = page.locator("#stereo input[type=checkbox]")
    assert box.is_checked()
    box.uncheck()
    page.click("#generate-btn")
    _wait_card(page, "clip-audio-0", "· mono ·")
    _audio_loads(page, "#clip-audio-0")
    assert "mono" in page.inner_text("#eta")
    box.check()


def test_rho_sweep_tab(page):
    _set_number(page, "steps", 4)  # rho shapes the schedule from 3 steps on
    page.get_by_role("tab", name="ρ sweep").click()
    box = page.get_by_label("ρ values (up to 8)")
    box.fill("1, 3, 7, 100, 1000")
    page.click("#sweep-btn")
    srcs = []
    for i, rho in enumerate(("1", "3", "7", "100", "1000")):
        # One clip per rho, at the Generate tab's duration, captioned with its rho.
        assert _audio_loads(page, f"#sweep-audio-{i}") == pytest.approx(4.0, abs=0.1)
        assert f"ρ = {rho}" in _card_text(page, f"sweep-audio-{i}")
        srcs.append(page.get_attribute(f"#sweep-audio-{i} audio[src]", "src"))
    assert len(set(srcs)) == 5
    assert not page.locator("#sweep-audio-5 audio[src]").count()  # no sixth card
    _shot(page, "rho_sweep")


def test_ab_tab(page):
    page.get_by_role("tab", name="A/B").click()
    page.click("#ab-btn")
    assert _audio_loads(page, "#ab-audio-0") == pytest.approx(4.0, abs=0.1)
    assert _audio_loads(page, "#ab-audio-1") == pytest.approx(4.0, abs=0.1)
    a, b = _card_text(page, "ab-audio-0"), _card_text(page, "ab-audio-1")
    assert "A: " in a and "B: " in b and "steps" in a and "steps" in b  # each side names its variant
    assert page.get_attribute("#ab-audio-0 audio[src]", "src") != page.get_attribute("#ab-audio-1 audio[src]", "src")
    _shot(page, "ab")


def test_adapter_slider_and_adapted_vs_plain(page):
    if page.locator("#adapter-0").count() == 0:
        pytest.skip("screenshot mode serves the embedded default without adapters")
    page.get_by_role("tab", name="Generate").click()
    _set_number(page, "adapter-0", 0.5)
    page.wait_for_function("() => document.querySelector('#eta')?.innerText.includes('adapters: calypso 0.5')")
    page.get_by_role("tab", name="A/B").click()
    page.locator("#ab-mode").get_by_text("adapted vs plain").click()
    first = page.get_attribute("#ab-audio-0 audio[src]", "src")
    page.click("#ab-btn")
    page.wait_for_function(f"() => document.querySelector('#ab-audio-0 audio[src]')?.src != '{first}'")
    assert _audio_loads(page, "#ab-audio-1") == pytest.approx(4.0, abs=0.1)
    page.get_by_text("· plain").first.wait_for()
    a, b = _card_text(page, "ab-audio-0"), _card_text(page, "ab-audio-1")
    assert "calypso 0.5" in a and "· plain" in b
    assert a.split("·")[0].replace("A: ", "") == b.split("·")[0].replace("B: ", "")  # one variant, both sides
    page.locator("#ab-mode").get_by_text("two variants").click()


def test_extend_and_replace_from_a_clip_card(page):
    page.get_by_role("tab", name="Generate").click()
    _set_number(page, "bpm", 120)
    _set_number(page, "duration", 4)
    page.click("#generate-btn")
    assert _audio_loads(page, "#clip-audio-0") == pytest.approx(4.0, abs=0.1)
    first = page.get_attribute("#clip-audio-0 audio[src]", "src")
    page.click("#clip-extend-0")  # 8 bars by default: 2 bars + 8 = 20 s at 120 BPM
    page.wait_for_function(f"() => document.querySelector('#clip-audio-0 audio[src]')?.src != '{first}'")
    page.get_by_text("Extended by 8 bars").first.wait_for()  # (the 20 s length: tests/app/test_app_editing.py)
    assert "Extended by 8 bars" in _card_text(page, "clip-audio-0")
    _wait_card(page, "clip-audio-1", "Source")  # the source beside it
    assert _audio_loads(page, "#clip-audio-1") == pytest.approx(4.0, abs=0.1)
    img = page.wait_for_selector("#clip-spec-0 img[src]")
    page.wait_for_function("img => img.complete && img.naturalHeight > 200", arg=img)  # waveforms + spectrogram
    _shot(page, "extend")
    extended = page.get_attribute("#clip-audio-0 audio[src]", "src")
    page.click("#clip-replace-0")  # bar 2 to bar 2
    page.wait_for_function(f"() => document.querySelector('#clip-audio-0 audio[src]')?.src != '{extended}'")
    page.get_by_text("Bar 2 replaced").first.wait_for()
    assert "Bar 2 replaced" in _card_text(page, "clip-audio-0")
