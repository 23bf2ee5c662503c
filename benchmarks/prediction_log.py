"""The prediction log's moves into SQLite as the log grows: request ids random throughout against time first.

The log's thread moves what the server handed it into SQLite every 0.2 s (`mlsys.runtime._move`, one transaction, 32
rows at a time). The `predictions` table has an index on `request_id`, for feedback. With ids random throughout (what
`next_request_id` gave before: 32 hex digits of a keyed hash), each row lands at a random place in that index, so the
pages a move touches spread over the whole index as the log grows. With ids that start with the time
(`mlsys.serve.next_request_id` now: epoch milliseconds, then the keyed hash), each move appends near the index's end.

Two log files grow side by side, moves alternating between them, each move as many rows as 0.2 s at 6,250 requests a
second gives. Printed: the log thread's CPU time per row (thread time, medians over each tenth of the run) at the start,
the middle and the end, and the ratio random / time first.

    python benchmarks/prediction_log.py [--rows 500000] [--move 1250]
"""
import argparse, secrets, shutil, sqlite3, statistics, tempfile, time
from pathlib import Path
import orjson
from mlsys.example import example_table
from mlsys.runtime import LOG_SCHEMA, _move
from mlsys.serve import next_request_id


def open_log(path):
    c = sqlite3.connect(path)
    c.execute('PRAGMA journal_mode=WAL')
    c.executescript(LOG_SCHEMA)
    c.execute('PRAGMA synchronous=NORMAL')   # as the log's thread sets it
    return c


def main(rows, move):
    rec = orjson.dumps(example_table().row(0, named=True)).decode()
    ids = dict(random=lambda: secrets.token_hex(16), time_first=next_request_id)
    tmp = Path(tempfile.mkdtemp())
    logs = {k: open_log(tmp/f'{k}.sqlite') for k in ids}
    per_row = {k: [] for k in ids}
    for _ in range(rows // move):
        for k, new_id in ids.items():
            batch = [('predictions', [(new_id(), time.time(), 'm:1', 'primary', rec, 0.5, 'Yes', 0.3, 0)
                                      for _ in range(move)])]
            t0 = time.thread_time()
            _move(logs[k], batch, {})
            per_row[k].append((time.thread_time() - t0) / move * 1e6)
    n = len(per_row['random'])
    tenth = lambda k, i: statistics.median(per_row[k][i * n // 10:(i + 1) * n // 10])
    print(f"{rows:,} rows a log, moves of {move:,}; log thread CPU per row (µs), medians of each tenth of the run")
    print(f"{'rows in the log':>16s} {'random ids':>11s} {'time first':>11s} {'ratio':>6s}")
    for i in (0, 4, 9):
        r, t = tenth('random', i), tenth('time_first', i)
        print(f"{(i + 1) * rows // 10:16,d} {r:11.2f} {t:11.2f} {r / t:6.2f}")
    print(f"whole run: random {sum(per_row['random']) * move / 1e6:.2f} s, "
          f"time first {sum(per_row['time_first']) * move / 1e6:.2f} s of the log thread's CPU")
    for c in logs.values(): c.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=int, default=500_000)
    ap.add_argument('--move', type=int, default=1250)
    main(**vars(ap.parse_args()))
