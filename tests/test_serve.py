"The server as a real process on loopback: readiness, rollout, access, bad input, soak, drain."
import json, math, os, signal, socket, sqlite3, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from contextlib import contextmanager
import httpx
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from conftest import BIN, Served, free_port, mlsys
from mlsys.config import run_file
from mlsys.example import example_table
from mlsys.registry import Registry
from mlsys.runtime import log_window
from mlsys.serve import MAX_BUCKETS, Server
from mlsys.train import TabularData

EVIDENCE = dict(parity_passed=True, fairness_passed=True, latency_ms_batch1=0.2, roc_auc=0.8)
JSON = {'Content-Type': 'application/json'}


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


@contextmanager
def _serving(tmp_path, exported, **flags):
    "A registry with two versions (1 in production) served by a real `mlsys serve`; stopped afterwards."
    reg = _registry(tmp_path/'registry', exported)
    s = Served(tmp_path/'home', reg.root, **flags)
    try: yield s, reg
    finally: s.stop()


def _record(client, headers=None):
    "A valid record built from the served schema."
    props = (client.get('/openapi.json', headers=headers).json()['paths']['/v1/predict']['post']['requestBody']
             ['content']['application/json']['schema']['oneOf'][0]['properties'])
    return {k: (p['enum'][0] if 'enum' in p else 'x') if p['type'] == 'string' else float(p.get('minimum', 0))
            for k, p in props.items()}


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
    with _serving(tmp_path, exported, candidate=2, canary_share=0.2) as (s, reg):
        rec, n = _record(s.client), 1500
        versions = [s.client.post('/v1/predict', json=rec, headers={'X-Request-Key': f'customer-{i}'})
                    .json()['model_version'] for i in range(n)]
        share = versions.count('churn:2') / n
        assert abs(share - 0.2) < 3 * math.sqrt(0.2 * 0.8 / n), share
        again = [s.client.post('/v1/predict', json=rec, headers={'X-Request-Key': f'customer-{i}'})
                 .json()['model_version'] for i in range(50)]
        assert again == versions[:50]                                     # one key always meets the same version


def test_shadow_scores_copies_off_the_path_and_fallback_answers_degraded(tmp_path, exported):
    with _serving(tmp_path, exported, candidate=2, shadow='true') as (s, reg):
        rec = _record(s.client)
        ids = [s.client.post('/v1/predict', json=rec).json() for _ in range(20)]
        assert {r['model_version'] for r in ids} == {'churn:1'} and not any(r['degraded'] for r in ids)
        db = tmp_path/'home'/'predictions'/'log.sqlite'
        def logged():
            with sqlite3.connect(db) as c: return dict(c.execute('SELECT role, COUNT(DISTINCT request_id) '
                                                                 'FROM predictions GROUP BY role').fetchall())
        s.wait(lambda: logged() == {'primary': 20, 'shadow': 20})
    # the primary can never make it
    s = Served(tmp_path/'home2', reg.root, fallback=2, env=dict(MLSYS_SERVE_TIME_BUDGET_MS='0.0001'))
    try:
        r = s.client.post('/v1/predict', json=_record(s.client)).json()
        assert r['degraded'] and r['model_version'] == 'churn:2'
        assert 'mlsys_fallbacks_total 1.0' in s.client.get('/metrics').text
    finally: s.stop()


def test_api_key_and_rate_limit(tmp_path, exported):
    with _serving(tmp_path, exported, api_key='s3cret',
                  env=dict(MLSYS_SERVE_RATE_LIMIT='5', MLSYS_SERVE_RATE_BURST='5')) as (s, reg):
        assert s.client.post('/v1/predict', json={}).status_code == 401
        assert s.client.post('/v1/predict', json={}, headers={'X-API-Key': 'wrong'}).status_code == 401
        h = {'Authorization': 'Bearer s3cret'}
        rec = _record(s.client, h)
        codes = [s.client.post('/v1/predict', json=rec, headers=h) for _ in range(8)]
        assert [c.status_code for c in codes[:4]] == [200] * 4 and codes[-1].status_code == 429   # + /openapi.json: 5
        assert int(codes[-1].headers['Retry-After']) >= 1
        assert s.client.post('/admin/reload').status_code == 404                 # no admin key: admin routes off


def _mutations(rec):
    "Requests made from a valid record by one change each, and arbitrary JSON."
    keys = sorted(rec)
    junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=10)
    one = st.tuples(st.sampled_from(keys), junk).map(lambda kv: json.dumps(rec | {kv[0]: kv[1]}).encode())
    drop = st.sampled_from(keys).map(lambda k: json.dumps({x: v for x, v in rec.items() if x != k}).encode())
    return one | drop | junk.map(lambda j: json.dumps(j).encode()) | st.binary(max_size=200)


def _hostile(rec):
    "The bodies issue 15 found taken wrongly or slowly: each must get a small 4xx, never a 5xx."
    one = json.dumps(rec)
    return [b'{"records":[' + b','.join([b'{}'] * 349_000) + b']}',                  # amplification
            (one[:-1] + ', "tenure": 5}').encode(),                                   # a key given twice
            ('{"records": [' + one + ', ' + one[:-1] + ', "tenure": 5}]}').encode(),  # ... in a batch's record
            json.dumps({'records': [rec], 'model_version': 'churn:2'}).encode(),      # a key beside "records"
            json.dumps(rec | {'contract': 'A' * 500_000}).encode(),                   # a huge bad value
            json.dumps(rec | {'B' * 500_000: 1}).encode(),                            # a huge unknown column name
            json.dumps({'records': [rec] * 1001}).encode(),                           # over serve.max_records
            json.dumps({'records': [{'a:b': 'c:d', 'e': 1}] * 2000}).encode(),        # colons: the duplicate check
            b'{"a":' * 1020 + b'{"b":1,"b":2}' + b'}' * 1020,                         # deep, with a repeated key
            b'[' * 5000 + b']' * 5000]


def test_no_input_makes_a_5xx_or_kills_the_server(tmp_path, exported):
    with _serving(tmp_path, exported) as (s, reg):
        rec = _record(s.client)
        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(_mutations(rec))
        def check(body):
            r = s.client.post('/v1/predict', content=body, headers={'Content-Type': 'application/json'})
            assert r.status_code < 500, (body, r.text)
            if r.status_code == 422: assert all(p['problem'] for p in r.json()['problems'])
        check()
        for body in _hostile(rec):
            r = s.client.post('/v1/predict', content=body, headers=JSON)
            assert 400 <= r.status_code < 500 and len(r.content) < 64_000, (body[:80], r.status_code, len(r.content))
        assert s.client.post('/v1/predict', json=rec).status_code == 200 and s.proc.poll() is None


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
            futs = [pool.submit(httpx.post, f'{s.client.base_url}/v1/predict', content=slow(), timeout=60, headers=JSON)
                    for _ in range(6)]
            time.sleep(0.35); s.proc.send_signal(signal.SIGTERM)      # all six are connected and half sent
            codes = [f.result().status_code for f in futs]
        assert codes == [200] * 6
        assert s.proc.wait(60) in (0, -signal.SIGTERM)               # uvicorn re-raises the signal once drained
        assert 'Traceback' not in s.proc.stderr.read()
    finally: s.stop()


def test_score_command_quarantines_bad_rows(tmp_path, exported):
    t = example_table().drop('churn').with_columns(pl.col('monthly_charges').cast(pl.String))
    t = t.with_columns(pl.when(pl.int_range(pl.len()) % 1000 == 7).then(pl.lit('n/a')).otherwise('monthly_charges')
                       .alias('monthly_charges'))
    t.write_parquet(tmp_path/'batch.parquet')
    r = mlsys('score', '--data', tmp_path/'batch.parquet', '--out', tmp_path/'out', '--model', exported/'model.onnx',
              '--chunk-rows', 1000)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    bad = t.filter(pl.int_range(pl.len()) % 1000 == 7).height
    assert (res['scored'], res['quarantined']) == (t.height - bad, bad)
    q = pl.read_parquet(tmp_path/'out'/'quarantine')
    assert sorted(q['_row'].to_list()) == [i for i in range(t.height) if i % 1000 == 7]
    assert pl.read_parquet(tmp_path/'out'/'predictions')['_row'].n_unique() == t.height - bad


def test_explain_by_raw_column_adds_up_to_the_served_score(tmp_path, exported):
    "A version registered with checkpoint, spec and background: /v1/explain's contributions sum to /v1/predict's logit."
    run_dir = exported.parent
    dm = TabularData(run_dir)
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
        # raw columns, not encoded features
        assert set(e['contributions']) == set(rec) - {'rownames'}
        assert abs(e['base_value'] + sum(e['contributions'].values()) - e['logit']) < 0.05
        assert abs(1 / (1 + math.exp(-e['logit'])) - p) < 1e-4                         # the network the model came from
        assert s.client.post('/v1/explain', json={'records': [rec] * 17}).status_code == 422
    finally: s.stop()
    s = Served(tmp_path/'home', reg.root, model=exported/'model.onnx')
    try: assert s.client.post('/v1/explain', json=_record(s.client)).status_code == 404
    finally: s.stop()


# Issue 15: hostile input. Each test below failed on the server before the fix.

KEY = 's3cret'


def _post(s, body:bytes, **headers):
    return s.client.post('/v1/predict', content=body, headers=JSON | headers)


@pytest.mark.parametrize('key', ['00000000', '000000000000000000000000000000000001', 'off', 'false', '0'])
def test_api_key_that_reads_as_a_number_or_boolean_is_required_verbatim(tmp_path, exported, key):
    "Item 1: a key that looks like a number or a boolean is text: no key, or a look-alike, is 401; only the key is 200."
    reg = _registry(tmp_path/'registry', exported)
    kw = dict(env=dict(MLSYS_SERVE_API_KEY=key)) if len(key) > 20 else dict(api_key=key)   # the flag, and the variable
    s = Served(tmp_path/'home', reg.root, wait_ready=False, **kw)
    try:
        s.wait(lambda: s.client.get('/readyz', headers={'X-API-Key': key}).status_code == 200)
        rec = _record(s.client, {'X-API-Key': key})
        assert s.client.post('/v1/predict', json=rec).status_code == 401
        for wrong in {'1', '0', 'False', 'false', '0' * 8} - {key}:
            assert s.client.post('/v1/predict', json=rec, headers={'X-API-Key': wrong}).status_code == 401, wrong
        assert s.client.post('/v1/predict', json=rec, headers={'X-API-Key': key}).status_code == 200
    finally: s.stop()


def test_many_empty_records_neither_amplify_nor_block_the_server(tmp_path, exported):
    "Item 2: 349,000 empty records (<1 MB): a small 422; a concurrent /healthz takes < 2 s (a blocked loop would not)."
    body = b'{"records":[' + b','.join([b'{}'] * 349_000) + b']}'
    assert len(body) < 1_048_576                                        # under the default body limit
    with _serving(tmp_path, exported) as (s, reg):
        res, waits = {}, []
        def big():
            for _ in range(3): res.setdefault('r', []).append(httpx.post(f'{s.client.base_url}/v1/predict',
                                                                         content=body, headers=JSON, timeout=120))
        t = threading.Thread(target=big); t.start()
        with httpx.Client(base_url=s.client.base_url, timeout=60) as c:
            while t.is_alive():
                t0 = time.perf_counter(); assert c.get('/healthz').status_code == 200
                waits.append(time.perf_counter() - t0); time.sleep(0.01)
        t.join()
        for r in res['r']:
            assert r.status_code == 422 and len(r.content) < 2_000, (r.status_code, len(r.content))
            assert 'over the limit of 1000' in r.json()['problems'][0]['problem']
        assert max(waits) < 2.0, f'/healthz waited {max(waits):.2f} s behind the big body'


def test_a_422_lists_a_bounded_number_of_problems_and_quotes_values_briefly(tmp_path, exported):
    "Item 2: serve.max_problems problems listed and the rest counted; a 1 MB value or column name quoted in ~64 chars."
    with _serving(tmp_path, exported, env=dict(MLSYS_SERVE_MAX_PROBLEMS=5, MLSYS_SERVE_MAX_RECORDS=60)) as (s, reg):
        rec = _record(s.client)
        r = _post(s, json.dumps({'records': [{}] * 50}).encode()).json()
        assert len(r['problems']) == 5 and r['more_problems'] == 50 * len(rec) - 5
        assert _post(s, json.dumps({'records': [rec] * 61}).encode()).status_code == 422      # the record limit
        assert _post(s, json.dumps({'records': [rec] * 60}).encode()).status_code == 200
        for bad in (rec | {'contract': 'A' * 1_000_000}, rec | {'B' * 1_000_000: 1}):
            r = _post(s, json.dumps(bad).encode())
            assert r.status_code == 422 and len(r.content) < 1_000, (r.status_code, len(r.content))


def test_wrong_keys_are_limited_per_address_before_the_key_is_checked(tmp_path, exported):
    "Item 3: 40 wrong keys from one address: 429 soon, then even for the right key; another address is not held up."
    with _serving(tmp_path, exported, api_key=KEY) as (s, reg):
        rec = _record(s.client, {'X-API-Key': KEY})
        codes = [s.client.post('/v1/predict', json=rec, headers={'X-API-Key': f'guess-{i}'}).status_code
                 for i in range(40)]
        assert codes.count(401) <= 12 and codes[-1] == 429, codes
        assert s.client.post('/v1/predict', json=rec, headers={'X-API-Key': KEY}).status_code == 429
        other = httpx.Client(base_url=s.client.base_url, transport=httpx.HTTPTransport(local_address='127.0.0.2'))
        with other: assert other.post('/v1/predict', json=rec, headers={'X-API-Key': KEY}).status_code == 200


def test_bearer_spacing_and_case_make_one_client(tmp_path, exported):
    "Item 3: 'Bearer' with 1-20 spaces, any case, is one client at 5/s (burst 5): at most the burst and refill get 200."
    with _serving(tmp_path, exported, api_key=KEY,
                  env=dict(MLSYS_SERVE_RATE_LIMIT=5, MLSYS_SERVE_RATE_BURST=5)) as (s, reg):
        rec = _record(s.client, {'X-API-Key': KEY})
        codes = [s.client.post('/v1/predict', json=rec,
                               headers={'Authorization': ('Bearer', 'bearer')[n % 2] + ' ' * n + KEY})
                 .status_code for n in range(1, 21)]
        assert codes.count(200) <= 7 and set(codes) == {200, 429}, codes


def test_the_bucket_table_is_bounded(tmp_path, exported):
    "Item 3: three times MAX_BUCKETS addresses leave at most MAX_BUCKETS buckets, and the latest address keeps its own."
    srv = Server({'paths.home': str(tmp_path/'home'), 'serve.rate_limit': '1', 'serve.rate_burst': '1'},
                 model=str(exported/'model.onnx'))
    try:
        for i in range(3 * MAX_BUCKETS): srv._bucket(('rate', f'10.{i // 65536}.{i // 256 % 256}.{i % 256}'), 1.0, 1.0)
        assert len(srv.buckets) <= MAX_BUCKETS
        assert srv._bucket(('rate', f'10.{(i // 65536)}.{i // 256 % 256}.{i % 256}'), 1.0, 1.0) > 0   # still empty
    finally: srv.log.close()


def test_with_a_key_set_contract_and_metrics_are_closed_and_probes_say_little(tmp_path, exported):
    "Item 4: /openapi.json and /metrics need the key; /healthz and /readyz are open, without the version or paths."
    reg = _registry(tmp_path/'registry', exported)
    missing = tmp_path/'private-models-dir'/'model.onnx'
    s = Served(tmp_path/'home', reg.root, wait_ready=False, api_key=KEY, model=missing)
    try:
        r = s.client.get('/readyz')
        assert r.status_code == 503 and 'private-models-dir' not in r.text and str(tmp_path) not in r.text, r.text
        assert 'private-models-dir' in s.client.get('/readyz', headers={'X-API-Key': KEY}).json()['reason']
    finally: s.stop()
    s = Served(tmp_path/'home', reg.root, api_key=KEY)
    try:
        assert s.client.get('/healthz').json() == {'alive': True}
        assert s.client.get('/readyz').json() == {'ready': True}
        assert s.client.get('/readyz', headers={'X-API-Key': KEY}).json()['model_version'] == 'churn:1'
        for route in ('/openapi.json', '/metrics'):
            assert s.client.get(route).status_code == 401, route
            assert s.client.get(route, headers={'Authorization': f'Bearer {KEY}'}).status_code == 200, route
    finally: s.stop()


def test_feedback_needs_a_known_id_and_one_of_the_classes(tmp_path, exported):
    "Item 5: unknown id 404; 'Maybe', 'yes', 42, true and a 100,000-character label refused; 'Yes' recorded at once."
    reg = _registry(tmp_path/'registry', exported)
    s = Served(tmp_path/'home', reg.root, env=dict(MLSYS_SERVE_DURABLE_LOG='false'))   # the id is not on disk yet
    try:
        rid = s.client.post('/v1/predict', json=_record(s.client)).json()['request_id']
        fb = lambda i, label: s.client.post('/v1/feedback', json=dict(request_id=i, label=label))
        assert fb('f' * 32, 'Yes').status_code == 404 and fb(rid + '-0', 'Yes').status_code == 404
        for label in ('Maybe', 'yes', 42, True, None, ['Yes']):
            assert fb(rid, label).status_code == 422, label
        assert 400 <= fb(rid, 'Y' * 100_000).status_code < 500
        r = fb(rid, 'Yes')
        assert r.status_code == 202 and r.json()['label'] == 'Yes'
        assert s.client.post('/v1/feedback', json=dict(request_id=rid, label='No', note='x')).status_code == 422
    finally: s.stop()


def test_other_origins_cannot_post_and_get_no_cors_answer(tmp_path, exported):
    "Item 5: text/plain, form and typeless POSTs (a cross-origin page sends them without preflight) get 415; no CORS."
    with _serving(tmp_path, exported) as (s, reg):
        rec = _record(s.client)
        rid = s.client.post('/v1/predict', json=rec).json()['request_id']
        for route, body in (('/v1/predict', rec), ('/v1/feedback', dict(request_id=rid, label='Yes')),
                            ('/v1/explain', rec)):
            for ct in ('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', None):
                r = s.client.post(route, content=json.dumps(body), headers={'Origin': 'https://evil.example'} |
                                  ({'Content-Type': ct} if ct else {}))
                assert (r.status_code == 415
                        and 'access-control-allow-origin' not in r.headers), (route, ct, r.status_code)
        pre = s.client.options('/v1/feedback', headers={'Origin': 'https://evil.example',
                                                        'Access-Control-Request-Method': 'POST'})
        assert 'access-control-allow-origin' not in pre.headers and pre.status_code >= 400


def test_ids_are_unguessable_and_each_batch_record_is_labelled_by_its_own(tmp_path, exported):
    "Item 5: ids: the time, then an unguessable part; a batch's records get <id>-<i>, each labelled; the latest wins."
    with _serving(tmp_path, exported) as (s, reg):
        rec = _record(s.client)
        ids = [s.client.post('/v1/predict', json=rec).json()['request_id'] for _ in range(30)]
        keyed = [i[12:] for i in ids]                              # the first 12 digits are epoch milliseconds
        assert all(abs(int(i[:12], 16) / 1e3 - time.time()) < 60 for i in ids) and ids[0][:12] <= ids[-1][:12]
        assert len({k[:8] for k in keyed}) == len(ids)                 # the keyed part: no shared prefix, no step
        assert len({int(b, 16) - int(a, 16) for a, b in zip(keyed, keyed[1:])}) > 1
        got = s.client.post('/v1/predict', json={'records': [rec | {'tenure': t} for t in (1, 30, 60)]}).json()
        rids = [p['request_id'] for p in got['predictions']]
        assert rids == [f"{got['request_id']}-{i}" for i in range(3)]
        for i, label in zip(rids, ('Yes', 'No', 'Yes')):
            assert s.client.post('/v1/feedback', json=dict(request_id=i, label=label)).status_code == 202
        # a correction
        assert s.client.post('/v1/feedback', json=dict(request_id=rids[0], label='No')).status_code == 202
        assert s.client.post('/v1/feedback', json=dict(request_id=got['request_id'], label='No')).status_code == 404
        log = tmp_path/'home'/'predictions'/'log.sqlite'   # labels reach SQLite within the log's interval
        s.wait(lambda: (w := log_window(log, 'churn:1', 1)).height == 33 and w['label'].null_count() == 30)
        w = log_window(log, 'churn:1', 1)
        labels = dict(zip(w['request_id'], w['label']))
        assert [labels[i] for i in rids] == ['No', 'No', 'Yes'] and labels[ids[0]] is None


def test_repeated_keys_and_keys_beside_records_are_refused(tmp_path, exported):
    "Item 14: a column named twice (alone or batched), a key beside 'records': 422; extra_columns=ignore reads the key."
    with _serving(tmp_path, exported) as (s, reg):
        one = json.dumps(rec := _record(s.client))
        for body in (one[:-1] + ', "tenure": 5}', '{"records": [' + one[:-1] + ', "tenure": 5}]}'):
            r = _post(s, body.encode())
            assert r.status_code == 422 and r.json()['problems'][0]['column'] == 'tenure', r.text
        r = _post(s, json.dumps({'records': [rec], 'model_version': 'churn:2'}).encode())
        assert r.status_code == 422 and r.json()['problems'][0]['column'] == 'model_version'
        assert _post(s, json.dumps(rec | {'note': 'a: b: c'}).encode()).status_code == 422   # colons, no repeat: extra
    s = Served(tmp_path/'home', reg.root, env=dict(MLSYS_SERVE_EXTRA_COLUMNS='ignore'))
    try: assert _post(s, json.dumps({'records': [rec], 'model_version': 'churn:2'}).encode()).status_code == 200
    finally: s.stop()


def _stalled(port) -> socket.socket:
    "A connection that sends the headers of a 1,000-byte body, 10 bytes of it, and then nothing."
    c = socket.create_connection(('127.0.0.1', port))
    c.sendall(b'POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n'
              b'{"tenure":')
    return c


def test_a_stalled_upload_gets_408_and_does_not_hold_up_a_sigterm(tmp_path, exported):
    "Item 14: a stalled body gets 408 after serve.body_seconds; SIGTERM then exits well inside the drain time."
    with _serving(tmp_path, exported, env=dict(MLSYS_SERVE_BODY_SECONDS=2, MLSYS_SERVE_DRAIN_SECONDS=60)) as (s, reg):
        c = _stalled(s.port); c.settimeout(30)
        assert c.recv(200).startswith(b'HTTP/1.1 408'); c.close()
        c = _stalled(s.port); c.settimeout(30); time.sleep(0.3)
        t0 = time.time(); s.proc.send_signal(signal.SIGTERM)
        assert c.recv(200).startswith(b'HTTP/1.1 408'); c.close()
        assert s.proc.wait(40) in (0, -signal.SIGTERM) and time.time() - t0 < 30     # the drain would wait 60 s


def test_openapi_describes_every_route_with_its_schemas(tmp_path, exported):
    "Item 15: every route in /openapi.json, each with its answers' schemas; the POST routes with their request bodies."
    with _serving(tmp_path, exported) as (s, reg):
        paths = s.client.get('/openapi.json').json()['paths']
        assert set(paths) == {'/v1/predict', '/v1/explain', '/v1/feedback', '/healthz', '/readyz', '/metrics',
                              '/openapi.json', '/admin/reload'}
        for path, ops in paths.items():
            for method, op in ops.items():
                assert all('content' in a for a in op['responses'].values()), (path, method)
                if method == 'post' and path.startswith('/v1'):
                    assert 'application/json' in op['requestBody']['content']
        assert (paths['/v1/feedback']['post']['requestBody']['content']['application/json']['schema']['properties']
                ['label'] == {'enum': ['No', 'Yes'], 'type': 'string'})


def test_schema_driven_fuzz_of_every_route_finds_no_5xx(tmp_path, exported):
    "Item 15: schemathesis from the served schema, all routes, valid and invalid data: no 5xx, only documented answers."
    import schemathesis
    from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                     status_code_conformance)
    reg = _registry(tmp_path/'registry', exported)
    s = Served(tmp_path/'home', reg.root, api_key=KEY, env=dict(MLSYS_SERVE_ADMIN_KEY=KEY))   # admin reload too
    auth = {'X-API-Key': KEY}
    try:
        schema = schemathesis.openapi.from_dict(s.client.get('/openapi.json', headers=auth).json())
        checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
        seen = {}
        for result in schema.get_all_operations():
            op = result.ok()
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
                @given(case=op.as_strategy(generation_mode=mode))
                def check(case):
                    r = case.call_and_validate(base_url=str(s.client.base_url), headers=auth, checks=checks)
                    seen.setdefault(op.label, set()).add(r.status_code)
                try: check()
                except Exception as e:
                    if 'Unsatisfiable' not in type(e).__name__: raise
        assert {label.split(' ')[1] for label in seen} == {'/v1/predict', '/v1/explain', '/v1/feedback', '/healthz',
                                                           '/readyz', '/metrics', '/openapi.json',
                                                           '/admin/reload'}, seen
        assert 200 in seen['POST /v1/predict'] and 422 in seen['POST /v1/predict'], seen
        assert (s.client.post('/v1/predict', json=_record(s.client, auth), headers=auth).status_code == 200
                and s.proc.poll() is None)
    finally: s.stop()


def test_an_empty_registry_leaves_the_server_alive_and_not_ready(tmp_path, exported):
    "No model registered yet: alive, not ready; once one is registered and promoted, ready without a restart."
    reg = Registry(tmp_path/'registry')
    s = Served(tmp_path/'home', reg.root, wait_ready=False)
    try:
        assert s.client.get('/healthz').status_code == 200 and s.client.get('/readyz').status_code == 503
        _registry(reg.root, exported)
        s.wait(lambda: s.client.get('/readyz').status_code == 200)
    finally: s.stop()


def _count(text:str, route:str='v1/predict', status:str='200') -> float:
    "The requests counter of `route` and `status` in a Prometheus scrape."
    want = f'mlsys_requests_total{{route="{route}",status="{status}"}}'
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(want))


def test_metrics_add_up_across_workers(tmp_path, exported):
    "Two worker processes: every scrape, whichever worker answers it, counts the requests both of them served."
    with _serving(tmp_path, exported, workers=2) as (s, _):
        rec = _record(s.client)
        def fresh_ready():                                   # a new connection each: the workers share them out
            with httpx.Client(base_url=s.base, timeout=30) as c: return c.get('/readyz').status_code == 200
        s.wait(lambda: all(fresh_ready() for _ in range(12)))   # both workers have loaded the model
        for _ in range(40):
            with httpx.Client(base_url=s.base, timeout=30) as c:
                assert c.post('/v1/predict', json=rec).status_code == 200
        scrapes = []
        for _ in range(8):
            with httpx.Client(base_url=s.base, timeout=30) as c: scrapes.append(_count(c.get('/metrics').text))
        assert scrapes == [40.0] * 8, scrapes

