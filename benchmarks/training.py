"""Lightning training against a plain PyTorch loop: same model, data, epochs, batches and threads, in one run.

100,000 rows (the example features resampled), 5 epochs, a validation pass with AUROC after each epoch in both,
batch sizes 256 and 1,024. Lightning runs twice: lean (no logger, no checkpoints) and as the train stage runs it
(CSV + wandb offline tracking, best and last checkpoints written atomically). The Trainer's fixed start-up cost is
measured as a fit of one batch minus a plain step. The plain loop also runs with torch's default AdamW on the CPU
(the train stage asks for the fused kernel): the fused / default ratio is what that choice saves. And it runs with
`nn.Dropout` in place of `mlsys.train.Dropout` (which draws its CPU mask 16 bits an element where torch draws it one
element at a time: every CPU but Intel's): the ours / torch's ratio is what that saves. And with each embedding
called as a module (`nn.Embedding`'s backward adds one row at a time on the CPU) in place of `mlsys.train.lookup`'s
`index_select`: the lookup / module ratio. `--profile` prints where Lightning's per-step time goes. On a machine
whose cores others are using, `--threads 1` keeps torch's two-thread barriers from stalling on a descheduled thread
(runs of the same fit then vary by 10x); the ratios are the overhead's share either way.

    python benchmarks/training.py [--rows 100000] [--epochs 5] [--repeats 3] [--threads 2] [--profile]
"""
import argparse, cProfile, os, pstats, statistics, tempfile, time, warnings
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchmetrics.classification import BinaryAUROC
from mlsys.data import run_ingest
from mlsys.example import example_run
from mlsys.features import run_features
from mlsys.train import Dropout, EpochBatches, TabularData, TabularNet, finish_tracking, make_loggers, make_trainer

warnings.filterwarnings('ignore')
HP = dict(hidden=64, layers=2, dropout=0.1, lr=3e-3)


class Data(TabularData):
    "The example features resampled to `rows` training rows."
    def __init__(self, run_dir, rows, batch_size):
        super().__init__(run_dir, batch_size)
        idx = torch.from_numpy(np.random.default_rng(0).integers(0, len(self.tensors['train'][2]), rows))
        self.tensors['train'] = tuple(t[idx] for t in self.tensors['train'])


def plain(dm, epochs, fused=True, our_dropout=True, our_lookup=True):
    "The loop a careful person writes by hand: same batches, optimizer, schedule and per-epoch validation."
    torch.manual_seed(0)
    model = TabularNet(dm.tensors['train'][0].shape[1], dm.cardinalities, dm.task.to_dict(), max_epochs=epochs,
                       **HP)
    if not our_dropout:   # torch's own, as the train stage used before `mlsys.train.Dropout`
        for i, m in enumerate(model.mlp):
            if isinstance(m, Dropout): model.mlp[i] = nn.Dropout(m.p)
    if not our_lookup:    # each embedding called as a module, as the train stage did before `mlsys.train.lookup`
        model.embs.forward = lambda cat: torch.cat([e(cat[:, i]) for i, e in enumerate(model.embs)], 1)
    opt, _ = model.configure_optimizers(); opt, sched = opt[0], _[0]
    if not fused:   # torch's default AdamW on the CPU, as the train stage used before it asked for the fused kernel
        opt = torch.optim.AdamW(model.parameters(), lr=model.lr, weight_decay=model.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    for epoch in range(epochs):
        model.train()
        for num, cat, y in EpochBatches(dm.tensors['train'], dm.batch_size, True, 0, epoch=lambda: epoch):
            opt.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(model(num, cat), y).backward()
            opt.step()
        sched.step()
        model.eval(); auroc = BinaryAUROC()
        with torch.no_grad():
            for num, cat, y in EpochBatches(dm.tensors['valid'], dm.batch_size, False, 0):
                auroc.update(model(num, cat).sigmoid(), y.int())
        auroc.compute()


def lightning(dm, epochs, tracked, out, **kw):
    torch.manual_seed(0)
    model = TabularNet(dm.tensors['train'][0].shape[1], dm.cardinalities, dm.task.to_dict(), max_epochs=epochs,
                       **HP)
    loggers = make_loggers(out, 'bench', {}, mode='offline') if tracked else False
    lean = {} if tracked else dict(num_sanity_val_steps=0)
    trainer = make_trainer(out, max_epochs=epochs, accelerator='cpu', logger=loggers, checkpoints=tracked,
                           patience=10**6, progress=False, deterministic=False, **lean, **kw)
    trainer.fit(model, datamodule=dm)
    if tracked: finish_tracking(loggers)


def timed(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rows', type=int, default=100_000); ap.add_argument('--epochs', type=int, default=5)
    ap.add_argument('--repeats', type=int, default=3); ap.add_argument('--profile', action='store_true')
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.environ.setdefault('MLSYS_PATHS_HOME', tempfile.mkdtemp()); os.environ['WANDB_SILENT'] = 'true'
    run_dir = example_run(run_ingest, run_features)
    print(f"{a.rows:,} rows, {a.epochs} epochs, validation each epoch, {a.threads} threads; medians of {a.repeats}")
    for bs in (256, 1024):
        dm = Data(run_dir, a.rows, bs)
        steps = a.epochs * (a.rows // bs + 1)
        runs = {k: [] for k in ('plain', 'lean', 'tracked', 'unfused', 'torch dropout', 'module lookup')}
        for _ in range(a.repeats):
            runs['plain'].append(timed(lambda: plain(dm, a.epochs)))
            runs['unfused'].append(timed(lambda: plain(dm, a.epochs, fused=False)))
            runs['torch dropout'].append(timed(lambda: plain(dm, a.epochs, our_dropout=False)))
            runs['module lookup'].append(timed(lambda: plain(dm, a.epochs, our_lookup=False)))
            runs['lean'].append(timed(lambda: lightning(dm, a.epochs, False, tempfile.mkdtemp())))
            runs['tracked'].append(timed(lambda: lightning(dm, a.epochs, True, tempfile.mkdtemp())))
        m = {k: statistics.median(v) for k, v in runs.items()}
        print(f"batch {bs:5}: plain {m['plain']:6.2f} s | Lightning lean {m['lean']:6.2f} s "
              f"({m['lean'] / m['plain']:.2f}x, {(m['lean'] - m['plain']) / steps * 1e3:+.2f} ms/step) | "
              f"with tracking+checkpoints {m['tracked']:6.2f} s "
              f"({m['tracked'] / m['plain']:.2f}x) | plain with torch's default AdamW {m['unfused']:6.2f} s "
              f"(fused / default {m['plain'] / m['unfused']:.2f}x) | plain with nn.Dropout {m['torch dropout']:6.2f} s "
              f"(ours / torch's {m['plain'] / m['torch dropout']:.2f}x) | plain with embeddings called as modules "
              f"{m['module lookup']:6.2f} s (lookup / module {m['plain'] / m['module lookup']:.2f}x)")
    dm = Data(run_dir, 1024, 256)
    one = statistics.median(timed(lambda: lightning(dm, 1, False, tempfile.mkdtemp())) for _ in range(a.repeats))
    step = statistics.median(timed(lambda: plain(dm, 1)) for _ in range(a.repeats))
    print(f"fixed start-up: a 1-epoch Lightning fit of 4 batches takes {one:.2f} s against {step:.2f} s by hand: "
          f"about {one - step:.2f} s of Trainer set-up and teardown")
    if a.profile:
        dm = Data(run_dir, a.rows, 256)
        pr = cProfile.Profile(); pr.enable(); lightning(dm, 2, False, tempfile.mkdtemp()); pr.disable()
        pstats.Stats(pr).sort_stats('tottime').print_stats(15)


if __name__ == '__main__': main()
