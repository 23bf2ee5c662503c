"Authoring in JupyterLab, in headless chromium: the README's steps open a stage notebook, run it, show its output."
import json, os, secrets, shutil, subprocess, time
from pathlib import Path
import httpx
from playwright.sync_api import sync_playwright
from conftest import BIN, free_port, mlsys

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']


def _env(tmp:Path) -> dict:
    "The development install first on PATH; Jupyter's config, data and runtime folders new (no one's own settings)."
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLSYS_', 'JUPYTER', 'PYTHONPATH'))}
    return env | {'PATH': f"{BIN}:{env['PATH']}", 'JUPYTER_CONFIG_DIR': str(tmp/'jupyter-config'),
                  'JUPYTER_RUNTIME_DIR': str(tmp/'jupyter-runtime'), 'JUPYTERLAB_SETTINGS_DIR': str(tmp/'lab-settings'),
                  'JUPYTERLAB_WORKSPACES_DIR': str(tmp/'lab-workspaces'), 'MLSYS_PATHS_HOME': str(tmp/'home')}


def _start_lab(root:Path, port:int, token:str, env:dict) -> subprocess.Popen:
    "`jupyter lab` on loopback with `token`, serving `root`; returns once its API answers."
    lab = subprocess.Popen([str(BIN/'jupyter'), 'lab', '--no-browser', '--ServerApp.ip=127.0.0.1',
                            f'--ServerApp.port={port}', f'--IdentityProvider.token={token}',
                            f'--ServerApp.root_dir={root}', *(['--allow-root'] if os.geteuid() == 0 else [])],
                           cwd=root, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.time() + 120
    while time.time() < end:
        assert lab.poll() is None, lab.stderr.read()
        try:
            if httpx.get(f'http://127.0.0.1:{port}/api/status', params=dict(token=token)).status_code == 200: return lab
        except httpx.TransportError: pass
        time.sleep(0.2)
    raise TimeoutError('jupyter lab did not answer')


def test_jupyterlab_opens_a_stage_notebook_runs_its_first_cells_and_shows_their_output(tmp_path):
    "`mlsys new demo`, `jupyter lab` in it, open nbs/01_report.ipynb, Shift+Enter down the cells: the table shows."
    env = _env(tmp_path)
    r = mlsys('new', 'demo', cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    root, port, token = tmp_path/'demo', free_port(), secrets.token_hex(16)
    nb = json.loads((root/'nbs'/'01_report.ipynb').read_text())
    sources = [''.join(c['source']) for c in nb['cells']]
    upto = 1 + next(i for i, src in enumerate(sources) if src.startswith('t = metric_table('))  # down to the table
    code_cells = sum(c['cell_type'] == 'code' for c in nb['cells'][:upto])
    lab = _start_lab(root, port, token, env)
    try:
        assert httpx.get(f'http://127.0.0.1:{port}/api/contents/nbs').status_code == 403    # the token is required
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport=dict(width=1400, height=2400))
            page.goto(f'http://127.0.0.1:{port}/lab/tree/nbs/01_report.ipynb?token={token}')
            cells = page.locator('.jp-NotebookPanel:visible .jp-Notebook .jp-Cell')
            cells.first.wait_for(timeout=120_000)
            status = page.locator('.jp-StatusBar-Widget', has_text='Python 3 (ipykernel) | Idle')
            status.first.wait_for(timeout=120_000)                             # the kernel started and connected
            cells.first.locator('.cm-content').click()                      # into the first cell
            for _ in range(upto): page.keyboard.press('Shift+Enter')
            table = cells.nth(upto - 1).locator('.jp-OutputArea-output')
            table.wait_for(timeout=120_000)
            text = table.inner_text()
            assert 'roc_auc' in text and 'f1' in text and '0.84' in text, text
            prompts = [cells.nth(i).locator('.jp-InputPrompt').inner_text().strip() for i in range(upto + 1)]
            ran = [p for p in prompts if p not in ('', '[ ]:')]                 # markdown cells have no prompt
            assert ran == [f'[{i}]:' for i in range(1, code_cells + 1)], prompts   # each once, in order
            assert prompts[-1] in ('', '[ ]:'), prompts                         # and no further
            assert page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0
            browser.close()
    finally:
        lab.terminate()
        lab.wait(60)
