"The built docs site in a real headless browser (chromium): every page loads, shows API docs and outputs, no errors."
import functools, http.server, shutil, threading
import pytest
from nbdev.config import nbpath2html
from playwright.sync_api import sync_playwright
from conftest import ROOT

SITE = ROOT/'_docs'
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
STAGE_PAGES = [nbpath2html(p).name for p in sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))]
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']


@pytest.fixture(scope='module')
def site():
    "The built site served on loopback, the way a reader's browser gets it."
    assert (SITE/'index.html').exists(), "build the site first: python tools/docs.py"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


@pytest.fixture(scope='module')
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _open(browser, url):
    "Load `url`; the page and the errors it logged to the console or threw."
    page, errors = browser.new_page(), []
    page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
    page.on('pageerror', lambda e: errors.append(str(e)))
    resp = page.goto(url, wait_until='networkidle')
    assert resp and resp.ok, f'{url}: {resp and resp.status}'
    return page, errors


def test_home_page(site, browser):
    page, errors = _open(browser, f'{site}/index.html')
    assert page.locator('h1').first.inner_text().strip() == 'mlsys'
    assert 'scripts/test' in page.inner_text('body')
    nav = ' '.join(page.locator('nav').all_inner_texts())
    assert all(t in nav for t in ('Config', 'Data', 'Pipeline'))
    assert errors == []


@pytest.mark.parametrize('name', STAGE_PAGES)
def test_stage_page_shows_api_docs_and_outputs(site, browser, name):
    page, errors = _open(browser, f'{site}/{name}')
    assert page.locator('h1').count() >= 1
    api = page.locator('pre:has-text("def ")')
    assert api.count() >= 2, 'no rendered API docs (signatures from show_doc)'
    outputs = [t for t in page.locator('.jp-OutputArea-output, .cell-output').all_inner_texts() if t.strip()]
    assert len(outputs) >= 3, 'no cell outputs on the page'
    assert errors == [], errors
