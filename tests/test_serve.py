"The server as a real process on loopback: readiness, rollout (canary, shadow, fallback, hot reload), access, bad input, soak, drain."
import json, math, os, signal, socket, sqlite3, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from conftest import BIN, mlsys
from mlsys.registry import Registry

EVIDENCE = dict(parity_passed=True, fairness_passed=True, latency_ms_batch1=0.2, roc_auc=0.8)


@pytest.fixture(scope='module')
def exported(example_model):
    "The example run's export folder: fp32 and int8 files with the example's contract."
    return example_model/'export'


def _registry(root, exported, promote=True):
    "A registry with version 1 (fp32) and 2 (int8 dynamic); 1 in production."
    reg = Registry(root)
    for f in ('model.fp32.onnx', 'model.int8-dynamic.onnx'): reg.register('churn', {'model': exported/f}, {}, EVIDENCE)
    if promote: reg.promote('churn', 1)
    return reg


def _port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


class Served:
    "A running `mlsys serve` process and a client for it."
    def __init__(self, home, registry, wait_ready=True, **flags):
        self.port, self.home = _port(), home
        env = os.environ | dict(MLSYS_PATHS_HOME=str(home), MLSYS_SERVE_RELOAD_SECONDS='0.2') | {k: str(v) for k, v in flags.pop('env', {}).items()}
        args = [str(BIN/'mlsys'), 'serve', '--port', str(self.port), '--registry', str(registry)]
        for k, v in flags.items(): args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.client = httpx.Client(base_url=f'http://127.0.0.1:{self.port}', timeout=30)
        self.wait(lambda: self.client.get('/healthz').status_code == 200)
        if wait_ready: self.wait(lambda: self.client.get('/readyz').status_code == 200)

    def wait(self, cond, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            try:
                if cond(): return
            except httpx.TransportError: pass
            assert self.proc.poll() is None, self.proc.stderr.read()
            time.sleep(0.05)
        raise TimeoutError('condition not met')

    def stop(self):
        self.client.close()
        if self.proc.poll() is None: self.proc.send_signal(signal.SIGTERM); self.proc.wait(60)


def _record(client):
    "A valid record built from the served schema."
    props = client.get('/openapi.json').json()['paths']['/v1/predict']['post']['requestBody']['content']['application/json']['schema']['oneOf'][0]['properties']
    return {k: (p['enum'][0] if 'enum' in p else 'x') if p['type'] == 'string' else float(p.get('minimum', 0)) for k, p in props.items()}


def test_ready_only_when_a_model_is_loaded_and_hot_reload(tmp_path, exported):
    "No production model yet: alive but not ready (503); a promotion makes it ready; a rollback reaches it too."
    reg = _registry(tmp_path/'registry', exported, promote=False)
    s = Served(tmp_path/'home', reg.root, wait_ready=False)
    try:
        assert s.client.get('/healthz').status_code == 200
        r = s.client.get('/readyz'); assert r.status_code == 503 and 'production' in r.json()['reason']
        assert s.client.post('/v1/predict', json={}).status_code == 503
        reg.promote('churn', 1)
        s.wait(lambda: s.client.get('/readyz').status_code == 200)
        rec = _record(s.client)
        assert s.client.post('/v1/predict', json=rec).json()['model_version'] == 'churn:1'
        reg.promote('churn', 2)
        s.wait(lambda: s.client.post('/v1/predict', json=rec).json()['model_version'] == 'churn:2')
        reg.rollback('churn')
        s.wait(lambda: s.client.post('/v1/predict', json=rec).json()['model_version'] == 'churn:1')
    finally: s.stop()


def test_promotions_under_traffic_fail_no_request(tmp_path, exported):
    "Requests sent while the alias moves back and forth: every one answered 200, by version 1 or 2."
    reg = _registry(tmp_path/'registry', exported)
    s = Served(tmp_path/'home', reg.root)
    rec, seen, bad, stop = _record(s.client), set(), [], threading.Event()
    def traffic():
        with httpx.Client(base_url=s.client.base_url, timeout=30) as c:
            while not stop.is_set():
                r = c.post('/v1/predict', json=rec)
                if r.status_code != 200: bad.append(r.status_code)
                else: seen.add(r.json()['model_version'])
    threads = [threading.Thread(target=traffic) for _ in range(4)]
    try:
        for t in threads: t.start()
        for i in range(6):
            reg.promote('churn', 2 - i % 2, force=True, reason='drill'); time.sleep(0.5)
        stop.set()
        for t in threads: t.join()
        assert not bad and seen == {'churn:1', 'churn:2'}
    finally: stop.set(); s.stop()


def test_canary_share_within_binomial_interval_and_sticky(tmp_path, exported):
    reg = _registry(tmp_path/'registry', exported)
    s = Served(tmp_path/'home', reg.root, candidate=2, canary_share=0.2)
    try:
        rec, n = _record(s.client), 1500
        versions = [s.client.post('/v1/predict', json=rec, headers={'X-Request-Key': f'customer-{i}'}).json()['model_version'] for i in range(n)]
        share = versions.count('churn:2') / n
        assert abs(share - 0.2) < 3 * math.sqrt(0.2 * 0.8 / n), share
        again = [s.client.post('/v1/predict', json=rec, headers={'X-Request-Key': f'customer-{i}'}).json()['model_version'] for i in range(50)]
        assert again == versions[:50]                                     # one key always meets the same version
    finally: s.stop()


def test_shadow_scores_copies_off_the_path_and_fallback_answers_degraded(tmp_path, exported):
    reg = _registry(tmp_path/'registry', exported)
    s = Served(tmp_path/'home', reg.root, candidate=2, shadow='true')
    try:
        rec = _record(s.client)
        ids = [s.client.post('/v1/predict', json=rec).json() for _ in range(20)]
        assert {r['model_version'] for r in ids} == {'churn:1'} and not any(r['degraded'] for r in ids)
        db = tmp_path/'home'/'predictions'/'log.sqlite'
        def logged():
            with sqlite3.connect(db) as c: return dict(c.execute('SELECT role, COUNT(DISTINCT request_id) FROM predictions GROUP BY role').fetchall())
        s.wait(lambda: logged() == {'primary': 20, 'shadow': 20})
    finally: s.stop()
    s = Served(tmp_path/'home2', reg.root, fallback=2, env=dict(MLSYS_SERVE_TIME_BUDGET_MS='0.0001'))   # the primary can never make it
    try:
        r = s.client.post('/v1/predict', json=_record(s.client)).json()
        assert r['degraded'] and r['model_version'] == 'churn:2'
        assert 'mlsys_fallbacks_total 1.0' in s.client.get('/metrics').text
    finally: s.stop()


def test_api_key_and_rate_limit(tmp_path, exported):
    reg = _registry(tmp_path/'registry', exported)
    s = Served(tmp_path/'home', reg.root, api_key='s3cret', env=dict(MLSYS_SERVE_RATE_LIMIT='5', MLSYS_SERVE_RATE_BURST='5'))
    try:
        assert s.client.post('/v1/predict', json={}).status_code == 401
        assert s.client.post('/v1/predict', json={}, headers={'X-API-Key': 'wrong'}).status_code == 401
        rec, h = _record(s.client), {'Authorization': 'Bearer s3cret'}
        codes = [s.client.post('/v1/predict', json=rec, headers=h) for _ in range(8)]
        assert [c.status_code for c in codes[:5]] == [200] * 5 and codes[-1].status_code == 429
        assert int(codes[-1].headers['Retry-After']) >= 1
        assert s.client.post('/admin/reload').status_code == 404                 # no admin key: admin routes off
    finally: s.stop()


def _mutations(rec):
    "Requests made from a valid record by one change each, and arbitrary JSON."
    keys = sorted(rec)
    junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=10)
    one = st.tuples(st.sampled_from(keys), junk).map(lambda kv: json.dumps(rec | {kv[0]: kv[1]}).encode())
    drop = st.sampled_from(keys).map(lambda k: json.dumps({x: v for x, v in rec.items() if x != k}).encode())
    return one | drop | junk.map(lambda j: json.dumps(j).encode()) | st.binary(max_size=200)


def test_no_input_makes_a_5xx_or_kills_the_server(tmp_path, exported):
    reg = _registry(tmp_path/'registry', exported)
    s = Served(tmp_path/'home', reg.root)
    try:
        rec = _record(s.client)
        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(_mutations(rec))
        def check(body):
            r = s.client.post('/v1/predict', content=body, headers={'Content-Type': 'application/json'})
            assert r.status_code < 500, (body, r.text)
            if r.status_code == 422: assert all(p['problem'] for p in r.json()['problems'])
        check()
        assert s.client.post('/v1/predict', json=rec).status_code == 200 and s.proc.poll() is None
    finally: s.stop()


def test_soak_then_sigterm_drains_in_flight_requests(tmp_path, exported):
    "30 s at a fixed rate: no errors and bounded memory; then SIGTERM with large requests in flight: all answered."
    reg = _registry(tmp_path/'registry', exported)
    s = Served(tmp_path/'home', reg.root)
    rss = lambda: int(Path(f'/proc/{s.proc.pid}/status').read_text().split('VmRSS:')[1].split()[0]) // 1024
    try:
        rec = _record(s.client)
        for _ in range(200): s.client.post('/v1/predict', json=rec)   # warm: allocator pools, caches
        before, errors, n, end = rss(), 0, 0, time.time() + 30
        while time.time() < end:
            t0 = time.time()
            for _ in range(20): errors += s.client.post('/v1/predict', json=rec).status_code != 200; n += 1
            time.sleep(max(0, 0.1 - (time.time() - t0)))           # about 200 requests per second
        after = rss()
        assert errors == 0 and n > 3000
        assert after - before < 30, (before, after)                  # MB: the bound on growth over the soak
        body = json.dumps({'records': [rec] * 200}).encode()
        def slow():                                                 # a body that takes a second to arrive
            for i in range(0, len(body), len(body) // 10 + 1): yield body[i:i + len(body) // 10 + 1]; time.sleep(0.1)
        with ThreadPoolExecutor(6) as pool:
            futs = [pool.submit(httpx.post, f'{s.client.base_url}/v1/predict', content=slow(), timeout=60) for _ in range(6)]
            time.sleep(0.35); s.proc.send_signal(signal.SIGTERM)      # all six are connected and half sent
            codes = [f.result().status_code for f in futs]
        assert codes == [200] * 6
        assert s.proc.wait(60) in (0, -signal.SIGTERM)               # uvicorn re-raises the signal once drained
        assert 'Traceback' not in s.proc.stderr.read()
    finally: s.stop()


def test_score_command_quarantines_bad_rows(tmp_path, exported):
    import polars as pl
    from mlsys.example import example_table
    t = example_table().drop('churn').with_columns(pl.col('monthly_charges').cast(pl.String))
    t = t.with_columns(pl.when(pl.int_range(pl.len()) % 1000 == 7).then(pl.lit('n/a')).otherwise('monthly_charges').alias('monthly_charges'))
    t.write_parquet(tmp_path/'batch.parquet')
    r = mlsys('score', '--data', tmp_path/'batch.parquet', '--out', tmp_path/'out', '--model', exported/'model.onnx', '--chunk-rows', 1000)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    bad = t.filter(pl.int_range(pl.len()) % 1000 == 7).height
    assert (res['scored'], res['quarantined']) == (t.height - bad, bad)
    q = pl.read_parquet(tmp_path/'out'/'quarantine')
    assert sorted(q['_row'].to_list()) == [i for i in range(t.height) if i % 1000 == 7]
    assert pl.read_parquet(tmp_path/'out'/'predictions')['_row'].n_unique() == t.height - bad


def test_explain_by_raw_column_adds_up_to_the_served_score(tmp_path, exported):
    "A version registered with its checkpoint, spec and background: /v1/explain's contributions add up to the logit of /v1/predict."
    from mlsys.config import run_file
    from mlsys.train import TabularData
    run_dir = exported.parent
    dm = TabularData(run_file(run_dir, 'features').parent, 'churn')
    bg = dict(num=dm.tensors['train'][0][:30].tolist(), cat=dm.tensors['train'][1][:30].tolist())
    (tmp_path/'bg.json').write_text(json.dumps(bg))
    reg = Registry(tmp_path/'registry')
    reg.register('churn', {'model': exported/'model.fp32.onnx', 'checkpoint': run_file(run_dir, 'checkpoint'),
                           'feature_spec': run_file(run_dir, 'feature_spec'), 'explain_background': tmp_path/'bg.json'},
                 {}, EVIDENCE)
    reg.promote('churn', 1)
    s = Served(tmp_path/'home', reg.root)
    try:
        rec = _record(s.client) | {'tenure': 5, 'contract': 'Month-to-month'}
        p = s.client.post('/v1/predict', json=rec).json()['predictions'][0]['probability']
        r = s.client.post('/v1/explain', json={'records': [rec, rec]})
        assert r.status_code == 200, r.text
        e = r.json()['explanations'][0]
        assert set(e['contributions']) == set(rec) - {'rownames'}                       # raw columns, not encoded features
        assert abs(e['base_value'] + sum(e['contributions'].values()) - e['logit']) < 0.05
        assert abs(1 / (1 + math.exp(-e['logit'])) - p) < 1e-4                         # the network the model came from
        assert s.client.post('/v1/explain', json={'records': [rec] * 17}).status_code == 422
    finally: s.stop()
    s = Served(tmp_path/'home', reg.root, model=exported/'model.onnx')
    try: assert s.client.post('/v1/explain', json=_record(s.client)).status_code == 404
    finally: s.stop()
