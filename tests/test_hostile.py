"Hostile input, crashes and bad data (issue 15) via the command line and HTTP; server-only items 1-4 are in test_serve."
import json, shutil, signal, sqlite3, subprocess, sys, time
from contextlib import closing
from pathlib import Path
import polars as pl
import pytest
from conftest import Served, server_env
from mlsys.runtime import recover

BIN = Path(sys.executable).parent
SENSITIVE = ('female', 'senior_citizen')
FAST = ['-p', 'max_epochs=2', '-p', 'trials=0', '-p', 'n_boot=20', '-p', 'explain_rows=20', '-p', 'background_rows=10',
        '-p', 'mitigation=null']


def mlsys(*args, home, timeout=600, **env):
    "Run the `mlsys` command with its own home; the completed process."
    return subprocess.run([str(BIN/'mlsys'), *map(str, args)], capture_output=True, text=True,
                          env=server_env(home, **env), timeout=timeout)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    "The example pipeline run once with the command line (fast parameters), registered and forced into production."
    home = tmp_path_factory.mktemp('built')/'home'
    r = mlsys('run', '--example', '--set', f'paths.home={home}', *FAST,   # a list as a shell user writes it:
              '-p', f"sensitive_columns={','.join(SENSITIVE)}", home=home)  # the list-parameter test reads this run
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    p = mlsys('registry', 'promote', 'churn', '1', '--force', '--reason', 'test', home=home)   # <home>/registry
    assert p.returncode == 0, p.stderr
    table = pl.read_parquet(next(run_dir.rglob('accepted.parquet')))
    table = table.drop([c for c in ('_row',) if c in table.columns])
    return dict(home=home, registry=home/'registry', run_dir=run_dir, table=table, comma=r)


def _records(built, n, offset=0) -> list[dict]:
    "`n` valid request records: rows of the example table without the target."
    return built['table'].slice(offset, n).drop('churn').to_dicts()


def _copy_registry(built, tmp_path) -> tuple[Path, Path]:
    "A home holding a private copy of the built registry (for a test that may write to its audit log), and the home."
    home = tmp_path/'home'
    reg = Path(shutil.copytree(built['registry'], home/'registry', ignore=shutil.ignore_patterns('*.sqlite*')))
    for db in built['registry'].glob('*.sqlite'):     # a served registry's -wal and -shm come and go as it is read:
        with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(reg/db.name)) as dst: src.backup(dst)
    return reg, home


def _history(home) -> list[dict]:
    "The audit log of <home>/registry."
    r = mlsys('registry', 'history', 'churn', home=home)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope='module')
def served(built, tmp_path_factory):
    "One server without a key for the tests that only read answers."
    s = Served(tmp_path_factory.mktemp('served')/'home', built['registry'])
    yield s
    s.stop()


# Items 1-4 (keys, amplification, rate limits, open routes) start servers of their own: tests/test_serve.py has them.


# 5. Feedback
def _predicted_id(s, rec) -> str:
    r = s.client.post('/v1/predict', json=rec); assert r.status_code == 200, r.text
    return r.json()['request_id']


def test_feedback_for_an_unknown_request_id_is_refused(built, served):
    "Item 5: a well-formed request id that no prediction carries gets 404 or 422, not 202 'recorded'."
    rid = _predicted_id(served, _records(built, 1)[0])
    assert served.client.post('/v1/feedback', json=dict(request_id=rid, label='Yes')).status_code in (200, 201, 202)
    r = served.client.post('/v1/feedback', json=dict(request_id='f' * 32, label='Yes'))
    assert r.status_code in (404, 422), (r.status_code, r.text)


@pytest.mark.parametrize('label', ['Maybe', 42, True])
def test_feedback_label_outside_the_model_classes_is_refused(built, served, label):
    "Item 5: a label that is not one of the model's classes ('No', 'Yes') gets 422."
    rid = _predicted_id(served, _records(built, 1)[0])
    r = served.client.post('/v1/feedback', json=dict(request_id=rid, label=label))
    assert r.status_code == 422, (r.status_code, r.text)


def test_feedback_with_a_huge_label_is_refused(built, served):
    "Item 5: a 100,000-character label is refused with a 4xx (413 or 422)."
    rid = _predicted_id(served, _records(built, 1)[0])
    r = served.client.post('/v1/feedback', json=dict(request_id=rid, label='Y' * 100_000))
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])


def test_feedback_as_text_plain_is_refused(built, served):
    "Item 5: a text/plain POST (what another origin's page sends without a CORS preflight) is refused (400-415)."
    rid = _predicted_id(served, _records(built, 1)[0])
    r = served.client.post('/v1/feedback', content=json.dumps(dict(request_id=rid, label='Yes')),
                           headers={'Content-Type': 'text/plain'})
    assert 400 <= r.status_code <= 415, (r.status_code, r.text)


def test_request_ids_are_not_guessable(built, served):
    "Item 5: consecutive request ids share no long prefix (today: a per-process prefix and a counter)."
    rec = _records(built, 1)[0]
    ids = [_predicted_id(served, rec) for _ in range(20)]
    assert len({i[:24] for i in ids}) == len(ids), ids[:3]


def test_a_second_label_replaces_the_first(built, tmp_path):
    "Item 5: latest label wins: all Yes, then the likeliest half corrected to No: the monitor's ROC-AUC sees the fix."
    reg, home = _copy_registry(built, tmp_path)
    s = Served(home, reg)
    try:
        got = [s.client.post('/v1/predict', json=rec).json() for rec in _records(built, 120)]
        label = lambda g, y: s.client.post('/v1/feedback', json=dict(request_id=g['request_id'], label=y)).status_code
        assert all(label(g, 'Yes') < 300 for g in got)
        time.sleep(0.5)
        top = sorted(got, key=lambda g: g['predictions'][0]['probability'])[60:]
        assert all(label(g, 'No') < 300 for g in top)
    finally: s.stop()
    m = mlsys('monitor', '--registry', reg, '--policy', 'off', home=home, MLSYS_DRIFT_MIN_LABELS=50)
    assert m.returncode in (0, 1), m.stderr
    d = json.loads(m.stdout)
    assert any('ROC-AUC' in r for r in d['reasons']), d


# 6. Durability
def test_acknowledged_predictions_survive_sigkill(built, tmp_path):
    "Item 6: 200 sequential predictions answered 200, then kill -9: every answered request id is in the log."
    home = tmp_path/'home'
    s = Served(home, built['registry'])
    rec = _records(built, 1)[0]
    ids = [_predicted_id(s, rec) for _ in range(200)]
    s.proc.send_signal(signal.SIGKILL); s.proc.wait(30); s.client.close()
    log = home/'predictions'/'log.sqlite'
    recover(log)   # what the next server on the log, or the monitor, does first: the killed one's journal moved in
    assert not list(log.parent.glob('log.sqlite.journal-*'))
    with sqlite3.connect(log) as c:
        logged = {r[0] for r in c.execute('SELECT request_id FROM predictions')}
    lost = [i for i in ids if i not in logged]
    assert not lost, f'{len(lost)} of {len(ids)} acknowledged predictions lost'


# 7. Monitor types
def test_monitor_survives_a_label_after_the_first_hundred_rows(built, tmp_path):
    "Item 7: 120 predictions, a label only for the last: `mlsys monitor` checks the window (exit 0 or 1), no crash."
    reg, home = _copy_registry(built, tmp_path)
    s = Served(home, reg)
    try:
        ids = [_predicted_id(s, rec) for rec in _records(built, 120)]
        assert s.client.post('/v1/feedback', json=dict(request_id=ids[-1], label='Yes')).status_code < 300
    finally: s.stop()
    m = mlsys('monitor', '--registry', reg, '--policy', 'off', home=home)
    assert m.returncode in (0, 1), m.stderr


# 8. A broken batch is not healthy
@pytest.mark.parametrize('broken', ['text', 'null'])
def test_monitor_fails_a_batch_whose_rows_all_break_the_contract(built, tmp_path, broken):
    "Item 8: 300 rows with tenure 'abc' (or all null): not 'ok'; the exit status is non-zero."
    t = built['table'].head(300).with_columns(tenure=pl.lit('abc') if broken == 'text' else pl.lit(None, pl.Int64))
    t.write_parquet(tmp_path/'batch.parquet')
    reg, home = _copy_registry(built, tmp_path)
    m = mlsys('monitor', '--registry', reg, '--policy', 'off', '--data', tmp_path/'batch.parquet', home=home)
    assert m.returncode != 0, m.stdout
    if m.stdout.strip(): assert json.loads(m.stdout)['status'] != 'ok', m.stdout


# 9. Tiny windows
@pytest.mark.parametrize('rows', [1, 5])
def test_monitor_says_not_enough_rows_on_a_tiny_window(built, tmp_path, rows):
    "Item 9: a 1- or 5-row batch: 'not enough rows', exit 0, and no drift entry in the registry's audit log."
    built['table'].slice(100, rows).write_parquet(tmp_path/'tiny.parquet')
    reg, home = _copy_registry(built, tmp_path)
    m = mlsys('monitor', '--registry', reg, '--policy', 'alert', '--data', tmp_path/'tiny.parquet', home=home)
    assert m.returncode == 0 and 'not enough rows' in m.stdout.lower(), (m.returncode, m.stdout, m.stderr)
    assert 'drift' not in [h['action'] for h in _history(home)]


# 10. Score into a used folder
def _score(built, data, out, *more, home):
    return mlsys('score', '--data', data, '--out', out, '--registry', built['registry'], *more, home=home)


def _files(folder) -> list:
    return sorted((p.relative_to(folder), p.read_bytes()) for p in Path(folder).rglob('*') if p.is_file())


def _scored_once(built, tmp_path) -> Path:
    "Two batches written, the first scored into `out`; the home used."
    home = tmp_path/'home'
    built['table'].head(80).drop('churn').write_parquet(tmp_path/'first.parquet')
    built['table'].slice(100, 50).drop('churn').write_parquet(tmp_path/'second.parquet')
    assert _score(built, tmp_path/'first.parquet', tmp_path/'out', '--chunk-rows', 10, home=home).returncode == 0
    return home


def test_score_refuses_a_non_empty_output_folder(built, tmp_path):
    "Item 10: a second `mlsys score` into a used folder is refused (non-zero exit, one line) and leaves it as it was."
    home = _scored_once(built, tmp_path)
    before = _files(tmp_path/'out')
    r = _score(built, tmp_path/'second.parquet', tmp_path/'out', home=home)
    assert r.returncode != 0 and r.stderr.strip().count('\n') == 0, (r.returncode, r.stdout, r.stderr)
    assert _files(tmp_path/'out') == before


def test_score_overwrite_replaces_the_earlier_result(built, tmp_path):
    "Item 10: told to overwrite (`--overwrite`, the flag the issue implies), the folder holds only the new run's rows."
    home = _scored_once(built, tmp_path)
    r = _score(built, tmp_path/'second.parquet', tmp_path/'out', '--overwrite', home=home)
    assert r.returncode == 0, r.stderr
    rows = lambda part: pl.read_parquet(tmp_path/'out'/part).height if (tmp_path/'out'/part).exists() else 0
    assert rows('predictions') + rows('quarantine') == 50


# 11. One scoring contract online and in batch
def test_server_and_score_give_the_same_verdicts(built, served, tmp_path):
    "Item 11: the same records sent to the server and to `mlsys score` get the same verdicts (tenure 3.7 refused)."
    base = _records(built, 5, offset=200)
    recs = [base[0], base[1] | dict(tenure=3.7), base[2] | dict(contract='Nope'), base[3] | dict(monthly_charges='abc'),
            base[4] | dict(tenure=-1)]
    online = [served.client.post('/v1/predict', json=r).status_code == 200 for r in recs]
    as_text = [{k: None if v is None else str(v) for k, v in r.items()} for r in recs]
    pl.DataFrame(as_text, schema={k: pl.String for k in recs[0]}).write_csv(tmp_path/'batch.csv')
    r = _score(built, tmp_path/'batch.csv', tmp_path/'out', home=tmp_path/'home')
    assert r.returncode == 0, r.stderr
    scored = set(pl.read_parquet(tmp_path/'out'/'predictions')['_row'].to_list())
    batch = [i in scored for i in range(len(recs))]
    assert online == batch, dict(online=online, batch=batch)
    assert online[0] and not online[1]


def test_score_refuses_a_boolean_column_for_an_integer_one(built, served, tmp_path):
    "Item 11: tenure stored as boolean in parquet is not retyped to 0/1: refused or every row quarantined, as online."
    recs = _records(built, 50)
    assert served.client.post('/v1/predict', json=recs[0] | dict(tenure=True)).status_code == 422
    pl.DataFrame(recs).with_columns(pl.col('tenure') > 10).write_parquet(tmp_path/'bool.parquet')
    r = _score(built, tmp_path/'bool.parquet', tmp_path/'out', home=tmp_path/'home')
    assert r.returncode != 0 or json.loads(r.stdout)['scored'] == 0, r.stdout


def test_score_verdicts_do_not_depend_on_chunking(built, tmp_path):
    "Item 11: the same 50 rows twice (duplicate ids): the same counts with default chunks and with --chunk-rows 50."
    t = built['table'].head(50).drop('churn')
    pl.concat([t, t]).write_parquet(tmp_path/'dup.parquet')
    home = tmp_path/'home'
    a = _score(built, tmp_path/'dup.parquet', tmp_path/'a', home=home)
    b = _score(built, tmp_path/'dup.parquet', tmp_path/'b', '--chunk-rows', 50, home=home)
    assert a.returncode == b.returncode
    if a.returncode == 0:
        counts = lambda r: {k: v for k, v in json.loads(r.stdout).items() if k in ('scored', 'quarantined')}
        assert counts(a) == counts(b), (a.stdout, b.stdout)


# 12. One class
def test_run_refuses_a_target_with_one_class(built, tmp_path):
    "Item 12: a table whose target is all 'No' fails early (ingest or features), exit non-zero, naming the column."
    built['table'].filter(pl.col('churn') == 'No').write_parquet(tmp_path/'one.parquet')
    home = tmp_path/'home'
    r = mlsys('run', '--stages', 'ingest,features', '-p', f'data={tmp_path/"one.parquet"}', '-p', 'target=churn',
              '-p', 'id_column=rownames', home=home)
    assert r.returncode != 0 and 'churn' in r.stderr, (r.returncode, r.stderr)


# 13. Registry version numbers
@pytest.mark.parametrize('ref', ['99999999999999999999999', '\uff11'])
def test_registry_show_refuses_odd_version_numbers_in_one_line(built, ref):
    "Item 13: a version past SQLite's integers, or a full-width digit: one line on stderr, exit 2, no traceback."
    r = mlsys('registry', 'show', 'churn', ref, home=built['home'])
    one_line = 'Traceback' not in r.stderr and r.stderr.strip().count('\n') == 0
    assert r.returncode == 2 and one_line, (r.returncode, r.stderr)


# 14. Lenient parsing
def test_duplicate_json_keys_are_refused(built, served):
    "Item 14: a record naming a column twice is ambiguous: 400 or 422, not 'last one wins'."
    rec = _records(built, 1)[0]
    body = json.dumps(rec)[:-1] + ', "tenure": 5}'
    r = served.client.post('/v1/predict', content=body, headers={'Content-Type': 'application/json'})
    assert r.status_code in (400, 422), (r.status_code, r.text)


def test_stray_top_level_key_is_refused(built, served):
    "Item 14: with extra_columns = reject, a key beside 'records' gets 422 like an extra column would."
    r = served.client.post('/v1/predict', json={'records': _records(built, 1), 'model_version': 'churn:2'})
    assert r.status_code == 422, (r.status_code, r.text)


def test_a_422_does_not_echo_a_huge_value(built, served):
    "Item 14: a 1 MB category value is refused (4xx) with a response under 10 kB."
    r = served.client.post('/v1/predict', json=_records(built, 1)[0] | dict(contract='A' * 1_000_000))
    assert 400 <= r.status_code < 500 and len(r.content) < 10_000, (r.status_code, len(r.content))


# 15. The OpenAPI document
def test_openapi_describes_every_route(served):
    "Item 15: /openapi.json lists /v1/predict, /v1/explain, /v1/feedback, /healthz and /readyz."
    paths = served.client.get('/openapi.json').json()['paths']
    missing = {'/v1/predict', '/v1/explain', '/v1/feedback', '/healthz', '/readyz'} - set(paths)
    assert not missing, missing


# List parameters
def test_comma_separated_list_parameter_works_like_a_yaml_list(built):
    "`-p sensitive_columns=female,senior_citizen` (the module's run) finds the groups `[female, senior_citizen]` does."
    assert built['comma'].returncode == 0, built['comma'].stderr
    fairness = json.loads((built['run_dir']/'evaluate'/'metrics.json').read_text())['fairness']
    assert set(fairness) == {*SENSITIVE, ' & '.join(SENSITIVE)}, list(fairness)
