"""Scoring speed of the exported model, side by side in one run (one thread each, medians of repeats):

- torch eager, network only (features already computed), and torch eager after polars computes the features from
  raw rows;
- onnxruntime on the network-only graph (the same work as torch's network-only row);
- onnxruntime on the shipped model, raw columns in (the features inside the graph): fp32, int8 dynamic, int8 static;
  and fp32 as exported without `one_lookup` (one embedding lookup per categorical column), with its node count.

Each at batch 1, 1,024 and 65,536: median latency and rows per second, and the ratio to torch eager on the same work.

    python benchmarks/export.py [--repeats 300]
"""
import argparse, statistics, tempfile, time, warnings
from pathlib import Path
import onnx
import polars as pl
import torch
warnings.filterwarnings('ignore')
from mlsys.data import run_ingest
from mlsys.example import example_run
import mlsys.export
from mlsys.export import model_graph, network_graph, quantize
from mlsys.features import feature_arrays, graph_inputs, run_features, split_table, transform
from mlsys.runtime import session
from mlsys.train import TabularData, fit


def median_ms(f, repeats):
    for _ in range(max(5, repeats // 5)): f()   # warm: the first runs of a session allocate
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main(repeats):
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    run_dir = example_run(run_ingest, run_features, run_dir=tmp)
    dm, table = TabularData(run_dir), split_table(run_dir)
    _, net = fit(dm, tmp/'fit', dict(hidden=64), max_epochs=2, loggers=False, checkpoints=False, progress=False)
    net.eval()
    onnx.save(model_graph(dm.spec, net, {}), tmp/'model.fp32.onnx')
    paths = {'fp32': tmp/'model.fp32.onnx'} | quantize(tmp/'model.fp32.onnx', tmp, graph_inputs(dm.spec, table[:2000]))
    padding, mlsys.export.MAX_PADDING = mlsys.export.MAX_PADDING, 0          # the export without `one_lookup`
    onnx.save(model_graph(dm.spec, net, {}), tmp/'model.per-column.onnx')
    mlsys.export.MAX_PADDING = padding
    paths['fp32 per column'] = tmp/'model.per-column.onnx'
    print('nodes: ' + ', '.join(f'{k} {len(onnx.load(p).graph.node)}' for k, p in paths.items()))
    netonly = session(network_graph(net, len(dm.spec.num_names), len(dm.spec.cat_names)))
    rows = table.filter(pl.col('split') != 'train')
    results = []
    for b, n in ((1, repeats), (1024, repeats), (65_536, max(5, repeats // 30))):
        raw = rows[:b] if b <= rows.height else rows.sample(b, with_replacement=True, seed=0)
        num, cat = feature_arrays(dm.spec, transform(dm.spec, raw))
        tn, tc = torch.from_numpy(num).float(), torch.from_numpy(cat)
        inputs = graph_inputs(dm.spec, raw)
        def torch_net():
            with torch.no_grad(): net(tn, tc).sigmoid()
        def torch_full():
            n, c = feature_arrays(dm.spec, transform(dm.spec, raw))
            with torch.no_grad(): net(torch.from_numpy(n).float(), torch.from_numpy(c)).sigmoid()
        base_net = median_ms(torch_net, n)
        base_full = median_ms(torch_full, n)
        results += [('torch eager, network only', b, base_net, 1.0),
                    ('torch eager, polars features + network', b, base_full, 1.0)]
        ms = median_ms(lambda: netonly.run(None, {'num': num, 'cat': cat}), n)
        results.append(('onnxruntime fp32, network only', b, ms, base_net / ms))
        for k, p in paths.items():
            s = session(p)
            ms = median_ms(lambda: s.run(None, inputs), n)
            results.append((f'onnxruntime {k}, raw columns in', b, ms, base_full / ms))
    print(f"{'path':42s} {'batch':>5s} {'median ms':>10s} {'rows/s':>11s} {'speed vs torch':>15s}")
    for name, b, ms, ratio in results:
        print(f"{name:42s} {b:5d} {ms:10.4f} {b / ms * 1e3:11,.0f} {ratio:14.2f}x")
    print("(network-only rows compare with torch's network-only row; "
          "raw-column rows with torch's polars + network row)")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=300)
    main(ap.parse_args().repeats)
