"The house holds: no import cycles, serving floors without torch, and one home for everything a command writes."
import json, os, subprocess, sys, time
from pathlib import Path
import httpx
from conftest import BIN, ROOT, mlsys

sys.path.insert(0, str(ROOT/'tools'))
import imports   # tools/imports.py: the module import graph

HEAVY = ('torch', 'lightning', 'shap', 'captum')


def test_module_graph_has_no_cycle_and_no_function_local_imports():
    "Every import between mlsys modules is at module level, and following them never comes back."
    g = imports.graph()
    assert {'runtime', 'cli', 'register', 'example', 'score'} <= set(g)
    assert imports.cycles(g) == []
    assert [(m, t) for m, e in g.items() for t, k in e.items() if k == 'local'] == []
    assert 'cli' not in {t for e in g.values() for t in e}                       # the top floor: nobody imports it


def test_serving_floors_import_no_torch():
    "In a fresh interpreter, the runtime, the server, the scorer and the monitor load without torch and friends."
    for module in ('mlsys.runtime', 'mlsys.serve', 'mlsys.score', 'mlsys.monitor', 'mlsys.cli'):
        code = f"import sys, {module}; print([m for m in {HEAVY!r} if m in sys.modules])"
        out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == '[]', (module, out.stdout)


def test_set_paths_home_holds_runs_registry_and_prediction_log(tmp_path, example_model):
    "`--set paths.home=X` alone puts the run, the registry and the served predictions under X; ~/.mlsys stays empty."
    home, user = tmp_path/'x', tmp_path/'user'
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLSYS_')} | {'HOME': str(user)}
    r = mlsys('run', '--example', '--stages', 'ingest', '--set', f'paths.home={home}', env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]).parent == home/'runs'
    reg = subprocess.run([sys.executable, '-c', 'import sys; from mlsys.registry import Registry; '
                          'Registry(sys.argv[1]).register("churn", {"model": sys.argv[2]})',
                          str(home/'registry'), str(example_model/'export'/'model.onnx')],
                         capture_output=True, text=True)
    assert reg.returncode == 0, reg.stderr
    port = 18000 + os.getpid() % 1000
    srv = subprocess.Popen([str(BIN/'mlsys'), 'serve', '--model', '1', '--port', str(port),
                            '--set', f'paths.home={home}'],
                           env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f'http://127.0.0.1:{port}', timeout=10) as c:
            for _ in range(300):
                try:
                    if c.get('/readyz').status_code == 200: break
                except httpx.TransportError: pass
                assert srv.poll() is None, srv.stderr.read()
                time.sleep(0.1)
            schema = c.get('/openapi.json').json()['paths']['/v1/predict']['post']['requestBody']['content']
            props = schema['application/json']['schema']['oneOf'][0]['properties']
            rec = {k: (p['enum'][0] if 'enum' in p else 'x') if p['type'] == 'string' else float(p.get('minimum', 0))
                   for k, p in props.items()}
            assert c.post('/v1/predict', json=rec).status_code == 200
    finally:
        srv.terminate(); srv.wait(30)
    assert (home/'predictions'/'log.sqlite').exists()
    assert not (user/'.mlsys').exists()
