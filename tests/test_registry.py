"The registry under real concurrency and real crashes: many processes registering, promotions killed with SIGKILL."
import json, os, random, signal, sqlite3, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import mlsys
from mlsys.registry import Registry

GOOD = dict(parity_passed=True, fairness_passed=True, latency_ms_batch1=0.2, roc_auc=0.8)

REGISTER = """
import sys
from pathlib import Path
from mlsys.registry import Registry
root, i = sys.argv[1], int(sys.argv[2])
p = Path(root)/f'model-{i}.onnx'; p.write_bytes(f'model from process {i}'.encode())
print(Registry(root).register('m', {'model': p}, dict(run_id=f'p{i}')))
"""


def test_sixteen_processes_register_at_once(tmp_path):
    "16 processes started together end with versions 1..16, each once, each with its own artifact."
    Registry(tmp_path)                                    # the schema exists before the race, as in real use
    procs = [subprocess.Popen([sys.executable, '-c', REGISTER, str(tmp_path), str(i)],
                              stdout=subprocess.PIPE, text=True)
             for i in range(16)]
    got = {}
    for i, p in enumerate(procs):
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        got[i] = int(out.strip())
    assert sorted(got.values()) == list(range(1, 17))
    reg = Registry(tmp_path)
    for i, v in got.items():
        assert reg.read('m', v) == f'model from process {i}'.encode()
        assert reg.show('m', v)['run_id'] == f'p{i}'


PROMOTER = """
import sys
from mlsys.registry import Registry
reg, k = Registry(sys.argv[1]), 0
print('ready', flush=True)
while True:
    reg.promote('m', 1 + k % 2, reason='flip', force=True); k += 1
"""

READER = """
import json, sqlite3, sys, time
db, stop = sys.argv[1], time.time() + float(sys.argv[2])
seen, n = set(), 0
while time.time() < stop:
    c = sqlite3.connect(db, timeout=60)
    rows = c.execute("SELECT version FROM aliases WHERE name = 'm' AND alias = 'production'").fetchall()
    c.close(); n += 1
    seen.add(rows[0][0] if len(rows) == 1 else repr(rows))
print(json.dumps([sorted(map(str, seen)), n]))
"""


def test_promotion_killed_at_any_point_leaves_old_or_new(tmp_path):
    "Promotions SIGKILLed at random moments: the alias always names version 1 or 2, for a reader throughout and after."
    reg = Registry(tmp_path)
    for i in (1, 2):
        (tmp_path/f'v{i}').write_bytes(b'%d' % i); reg.register('m', {'model': tmp_path/f'v{i}'}, {}, GOOD)
    reg.promote('m', 1)
    reader = subprocess.Popen([sys.executable, '-c', READER, str(reg.db), '25'], stdout=subprocess.PIPE, text=True)
    rng, kills = random.Random(0), 0
    deadline = time.time() + 20
    while time.time() < deadline:
        p = subprocess.Popen([sys.executable, '-c', PROMOTER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == 'ready'
        time.sleep(rng.uniform(0, 0.05))                  # somewhere inside a promotion, or between two
        p.send_signal(signal.SIGKILL); p.wait(); kills += 1
        assert Registry(tmp_path).resolve('m', 'production') in (1, 2)
    out, _ = reader.communicate(timeout=60)
    seen, reads = json.loads(out)
    assert seen in (['1'], ['2'], ['1', '2']), out     # never no row, never two, never another version
    assert reads > 100 and kills >= 20
    c = sqlite3.connect(reg.db)
    assert c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    moves = c.execute("SELECT COUNT(*) FROM audit WHERE action = 'promote'").fetchone()[0] - 1
    assert moves > kills                                  # promotions did complete between the kills
    hist = Registry(tmp_path).history('m', 'production')
    assert hist[-1]['to_version'] == Registry(tmp_path).resolve('m', 'production')   # the log and the alias agree


def test_cli_promote_rollback_history(home, tmp_path):
    "The command line over a real registry: held exits 3, promote and rollback move the alias, history lists them."
    reg = Registry(home/'registry')
    for i, auc in ((1, 0.80), (2, 0.81), (3, 0.60)):
        (tmp_path/f'v{i}').write_bytes(b'%d' % i)
        reg.register('churn', {'model': tmp_path/f'v{i}'}, {}, GOOD | dict(roc_auc=auc))
    assert mlsys('registry', 'promote', 'churn', '1').returncode == 0
    assert mlsys('registry', 'promote', 'churn', '2').returncode == 0
    r = mlsys('registry', 'promote', 'churn', '3')
    assert r.returncode == 3 and json.loads(r.stdout)['action'] == 'held'
    assert 'metric' in [g['gate'] for g in json.loads(r.stdout)['gates'] if not g['passed']]
    r = mlsys('registry', 'rollback', 'churn', '--reason', 'drill')
    assert r.returncode == 0 and json.loads(r.stdout)['to_version'] == 1
    assert json.loads(mlsys('registry', 'show', 'churn', 'production').stdout)['version'] == 1
    hist = json.loads(mlsys('registry', 'history', 'churn').stdout)
    assert ([(h['action'], h['to_version']) for h in hist]
            == [('promote', 1), ('promote', 2), ('held', 3), ('rollback', 1)])
    for bad in ('../churn', '..\\churn', '%2e%2e', '/etc/passwd'):
        r = mlsys('registry', 'show', bad, '1')
        assert r.returncode == 2 and 'invalid model name' in r.stderr, r.stderr
    assert [v['aliases'] for v in json.loads(mlsys('registry', 'list').stdout)] == [['production'], [], []]
