"Training end to end in real processes: DDP on CPU with gloo, and a SIGKILL mid-run resumed to identical weights."
import json, os, signal, subprocess, sys, textwrap, time
import pytest
import torch
from conftest import free_port
from mlsys.config import stage_file
from mlsys.data import run_ingest
from mlsys.example import example_run
from mlsys.features import run_features

SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from pathlib import Path
    torch.set_num_threads(1)
    from mlsys.train import TabularData, fit, make_loggers, finish_tracking
    run_dir, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    kw = dict(max_epochs=int(sys.argv[4]), patience=100, accelerator='cpu')
    if mode == 'ddp': kw.update(devices=2, strategy='ddp')
    dm = TabularData(run_dir, batch_size=256, seed=7)
    loggers = make_loggers(out, 'test-' + mode, dict(mode=mode), mode='offline') if mode == 'ddp' else False
    ckpt = sys.argv[5] if len(sys.argv) > 5 else None
    trainer, model = fit(dm, out, dict(hidden=32, dropout=0.2), seed=7, ckpt_path=ckpt, loggers=loggers, **kw)
    if loggers: finish_tracking(loggers)
    if trainer.is_global_zero:
        torch.save(model.state_dict(), out / 'final.pt')
        (out / 'result.json').write_text(json.dumps({'val_auroc': float(trainer.callback_metrics['val_auroc']),
                                                     'world_size': trainer.world_size}))
''')


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    "A run directory where the ingest and features stages ran on the example."
    return example_run(run_ingest, run_features, run_dir=tmp_path_factory.mktemp('run'))


def _run(script, *args, env=None, wait=True):
    cmd = [sys.executable, str(script), *map(str, args)]
    env = {**os.environ, 'WANDB_SILENT': 'true', **(env or {})}
    if not wait: return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


@pytest.fixture
def script(tmp_path, monkeypatch):
    monkeypatch.setenv('MLSYS_PATHS_HOME', str(tmp_path/'home'))
    p = tmp_path/'train_script.py'; p.write_text(SCRIPT)
    return p


def test_ddp_on_cpu_with_two_processes_matches_single_process(run_dir, script, tmp_path):
    single, ddp = tmp_path/'single', tmp_path/'ddp'
    _run(script, run_dir, single, 'single', 4)
    _run(script, run_dir, ddp, 'ddp', 4, env={'PL_TORCH_DISTRIBUTED_BACKEND': 'gloo'})
    a, b = (json.loads((d/'result.json').read_text()) for d in (single, ddp))
    assert b['world_size'] == 2
    assert abs(a['val_auroc'] - b['val_auroc']) < 0.01, (a, b)          # stated tolerance: 0.01 AUROC
    # rank zero alone wrote: one checkpoint set, one metrics log, one tracking run
    checkpoints = stage_file(ddp, 'checkpoint').parent
    assert sorted(checkpoints.iterdir()) == sorted([stage_file(ddp, 'checkpoint'), stage_file(ddp, 'last_checkpoint')])
    assert list(ddp.glob('**/metrics.csv')) == [stage_file(ddp, 'learning_curves')]
    runs = list((tmp_path/'home'/'tracking'/'wandb').glob('offline-run-*'))
    assert len(runs) == 1
    assert not list(ddp.glob('**/.*.ckpt.*'))                                # no temporary checkpoint left behind


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_weights(run_dir, script, tmp_path):
    epochs = 8
    full, broken = tmp_path/'full', tmp_path/'broken'
    _run(script, run_dir, full, 'single', epochs)
    p = _run(script, run_dir, broken, 'single', epochs, wait=False)
    last = stage_file(broken, 'last_checkpoint')
    deadline = time.time() + 300
    while time.time() < deadline:                                           # kill once two epochs are saved
        if last.exists() and torch.load(last, weights_only=True)['epoch'] >= 1: break
        assert p.poll() is None, p.stderr.read().decode()[-3000:]
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    saved = torch.load(last, weights_only=True)                              # whole, and loadable safely
    assert saved['epoch'] < epochs - 1 and 'optimizer_states' in saved and 'torch_rng_state' in saved
    _run(script, run_dir, broken, 'single', epochs, last)
    a, b = torch.load(full/'final.pt', weights_only=True), torch.load(broken/'final.pt', weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


STAGE = textwrap.dedent('''
    import os, sys
    import torch
    torch.set_num_threads(1)
    from mlsys.train import run_train
    res = run_train(sys.argv[1], sys.argv[2], trials=0, max_epochs=4, batch_size=256, seed=7,
              hparams=dict(hidden=32, dropout=0.2), settings={'tracking.mode': 'offline'}, accelerator='cpu',
              patience=100, progress=False,
              **({'num_nodes': 2, 'devices': 1, 'strategy': 'ddp'} if sys.argv[3] == 'nodes' else {}))
    print('NODE', os.environ.get('GROUP_RANK'), 'OF', os.environ.get('WORLD_SIZE'),
          'RESULT', 'written' if res else 'none')
''')


def test_two_torchrun_nodes_on_loopback_match_the_single_process(run_dir, tmp_path, monkeypatch):
    "The train stage on two nodes: two torchrun agents (`--nnodes 2`) at a c10d rendezvous on loopback, gloo on CPU."
    monkeypatch.setenv('MLSYS_PATHS_HOME', str(tmp_path/'home'))
    script = tmp_path/'stage.py'; script.write_text(STAGE)
    single, nodes = tmp_path/'single', tmp_path/'nodes'
    _run(script, run_dir, single, 'single')
    port = free_port()
    agents = [subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2', '--nproc-per-node', '1',
                                '--rdzv-backend', 'c10d', '--rdzv-endpoint', f'127.0.0.1:{port}',
                                '--rdzv-id', 'mlsys-test', '--max-restarts', '0',
                                str(script), str(run_dir), str(nodes), 'nodes'],
                               env={**os.environ, 'WANDB_SILENT': 'true'}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [a.communicate(timeout=900)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    said = sorted(next(l for l in log.splitlines() if l.startswith('NODE')) for log in logs)
    assert said == ['NODE 0 OF 2 RESULT written', 'NODE 1 OF 2 RESULT none'], said   # rank zero alone records
    a, b = (json.loads(stage_file(d, 'train_metrics').read_text()) for d in (single, nodes))
    assert abs(a['model']['valid']['roc_auc'] - b['model']['valid']['roc_auc']) < 0.01, (a, b)   # stated tolerance
    manifest = json.loads((nodes/'manifest.json').read_text())
    assert manifest['hparams'] == {'hidden': 32, 'dropout': 0.2} and manifest['task']['kind'] == 'binary'
    # rank zero alone wrote: one set, one log, one tracking run
    checkpoints = stage_file(nodes, 'checkpoint').parent
    assert sorted(checkpoints.iterdir()) == sorted([stage_file(nodes, 'checkpoint'),
                                                    stage_file(nodes, 'last_checkpoint')])
    assert list(nodes.glob('**/metrics.csv')) == [stage_file(nodes, 'learning_curves')]
    # the single run's and the nodes' one
    assert len(list((tmp_path/'home'/'tracking'/'wandb').glob('offline-run-*'))) == 2
