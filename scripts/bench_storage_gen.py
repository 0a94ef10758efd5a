#!/usr/bin/env python3
"""The data of the peers' gen_dataset.py (same series, values, timestamps and seed: its
gen_host model), encoded as the same Prometheus remote_write 1.0 requests it writes with
--shards 1 (one sample per TimeSeries with its full label set, BATCH samples per request, in
time order), but encoded with numpy instead of per sample in Python: the message of one
series at one time has a fixed length, so a time step is a template with values and
timestamps filled in. gen_dataset.py needs ~5 µs per sample (7 min for a year of hourly
points of 10,000 series); this needs well under 1 µs. Writes rw_<BATCH>.bin, meta.json and
prom_text_host0.txt as gen_dataset.py does (no wire statistics, no VictoriaMetrics import).

  bench_storage_gen.py --peers DIR --out OUT --hosts H --points P --interval S --end UNIX_S [--check]

--check also runs gen_dataset.py --shards 1 on the same arguments and compares the files
(use small sizes).
"""
import argparse, json, os, struct, subprocess, sys, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--peers', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--hosts', type=int, default=100)
    ap.add_argument('--points', type=int, default=360)
    ap.add_argument('--interval', type=int, default=10)
    ap.add_argument('--end', type=int, required=True)
    ap.add_argument('--batch', type=int, default=500)
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--jitter-ms', type=int, default=3)
    ap.add_argument('--check', action='store_true')
    a = ap.parse_args()
    sys.path.insert(0, a.peers)
    import numpy as np
    import snappy
    from gen_dataset import series_defs, gen_host, enc_labels, varint

    os.makedirs(a.out, exist_ok=True)
    t_gen = time.time()
    rng = np.random.default_rng(a.seed)
    defs = series_defs()
    H, P, S, N = a.hosts, a.points, a.hosts * len(defs), len(defs)
    end = a.end
    t0_ms = (end - (P - 1) * a.interval) * 1000
    offs = rng.integers(0, a.interval * 1000 - 10, H)
    TS = t0_ms + np.arange(P)[None, :] * a.interval * 1000 + offs[:, None] - a.interval * 1000 + \
        rng.integers(0, a.jitter_ms + 1, (H, P))
    V = np.concatenate([gen_host(rng, P, a.interval, defs) for _ in range(H)])
    labels = []
    for h in range(H):
        for name, lab, kind in defs:
            l = {'__name__': name, 'instance': f'host-{h:03d}:9100', 'job': 'node'}
            l.update(lab)
            labels.append(l)
    ts_len = {len(varint(int(t))) for t in (TS.min(), TS.max())}
    if len(ts_len) != 1:
        sys.exit('timestamps change varint length inside the data set; use gen_dataset.py')
    tl = ts_len.pop()
    txt = ''.join(f'{l["__name__"]}{{' + ','.join(f'{k}="{v}"' for k, v in sorted(l.items()) if k != '__name__') +
                  f'}} {float(V[s, 0])!r}\n' for s, l in enumerate(labels[:N]))
    open(os.path.join(a.out, 'prom_text_host0.txt'), 'w').write(txt)

    # One time step's messages, hosts in scrape order (by offset), as gen_dataset.py sends them.
    host_order = np.argsort(offs)
    smp_len = 1 + 8 + 1 + tl
    tmpl, voff, toff, moff = bytearray(), [], [], []
    for h in host_order:
        for s in range(h * N, (h + 1) * N):
            ts_msg_len = len(enc_labels(labels[s])) + 1 + len(varint(smp_len)) + smp_len
            moff.append(len(tmpl))
            tmpl += b'\x0a' + varint(ts_msg_len) + enc_labels(labels[s]) + b'\x12' + varint(smp_len) + b'\x09'
            voff.append(len(tmpl)); tmpl += b'\0' * 8
            tmpl += b'\x10'
            toff.append(len(tmpl)); tmpl += b'\0' * tl
    T = np.frombuffer(bytes(tmpl), dtype=np.uint8)
    order = np.concatenate([np.arange(h * N, (h + 1) * N) for h in host_order])
    vidx = np.array(voff)[:, None] + np.arange(8)[None, :]
    tidx = np.array(toff)[:, None] + np.arange(tl)[None, :]
    host_of_msg = np.repeat(host_order, N)
    moff = np.array(moff + [len(T)])
    fn = os.path.join(a.out, f'rw_{a.batch}.bin')
    nreq = comp = 0
    carry = b''
    carry_n = 0
    with open(fn, 'wb') as f:
        def flush(body):
            nonlocal nreq, comp
            c = snappy.compress(body)
            f.write(struct.pack('<II', 0, len(c))); f.write(c)
            nreq += 1; comp += len(c)
        for p in range(P):
            buf = T.copy()
            buf[vidx] = V[order, p].astype('<f8').view(np.uint8).reshape(-1, 8)
            t = TS[host_of_msg, p].astype(np.uint64)
            vb = np.empty((len(t), tl), dtype=np.uint8)
            for i in range(tl):
                b = (t >> np.uint64(7 * i)) & np.uint64(0x7f)
                vb[:, i] = b | (0x80 if i < tl - 1 else 0)
            buf[tidx] = vb
            step = buf.tobytes()
            i = 0
            if carry_n:
                take = min(a.batch - carry_n, S)
                carry += step[:moff[take]]
                carry_n += take
                i = take
                if carry_n == a.batch:
                    flush(carry); carry, carry_n = b'', 0
            while S - i >= a.batch:
                flush(step[moff[i]:moff[i + a.batch]])
                i += a.batch
            if i < S:
                carry, carry_n = step[moff[i]:moff[S]], S - i
        if carry_n:
            flush(carry)
    meta = {'jitter_ms': a.jitter_ms, 'hosts': H, 'series': S, 'points': P, 'samples': S * P,
            'interval_s': a.interval, 't_min_ms': int(TS.min()), 't_max_ms': int(TS.max()), 'batch': a.batch,
            'shards': 1, 'rw': {'file': os.path.basename(fn), 'requests': nreq, 'snappy_bytes': comp,
                                'snappy_bytes_per_sample': round(comp / (S * P), 2)},
            'encoder': 'bench_storage_gen.py', 'gen_total_s': round(time.time() - t_gen, 1)}
    json.dump(meta, open(os.path.join(a.out, 'meta.json'), 'w'), indent=1)
    print(json.dumps(meta))
    if a.check:
        ref = a.out.rstrip('/') + '.ref'
        subprocess.run([sys.executable, os.path.join(a.peers, 'gen_dataset.py'), '--out', ref, '--hosts', str(H),
                        '--points', str(P), '--interval', str(a.interval), '--end', str(end), '--shards', '1',
                        '--batch', str(a.batch), '--seed', str(a.seed), '--jitter-ms', str(a.jitter_ms)],
                       check=True, stdout=subprocess.DEVNULL)
        same = open(fn, 'rb').read() == open(os.path.join(ref, f'rw_{a.batch}.bin'), 'rb').read()
        print(json.dumps({'identical_to_gen_dataset': same}))
        if not same:
            sys.exit(1)


if __name__ == '__main__':
    main()
