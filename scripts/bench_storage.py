#!/usr/bin/env python3
"""Helpers of scripts/bench-storage (run with the benchmark venv's Python).

  send    URL PID FILE SAMPLES     replay rw_<B>.bin (gen_dataset.py) to a remote_write receiver,
                                   one keep-alive connection per shard, requests of a shard in
                                   order; unlike the peers' rw_send.py it goes on after refused
                                   requests and counts them. Prints JSON.
  idle    PID [MIN_S] [MAX_S]      wait until PID has used < 2 % of a core for 6 s (after MIN_S,
                                   at most MAX_S); prints the seconds waited
  cpu     PID                      CPU seconds (utime+stime) of PID
  prom    DIR                      Prometheus data folder: blocks (bytes, samples from meta.json),
                                   wal/ and chunks_head/ bytes. Prints JSON.
  metrics URL NAME...              sums of the named Prometheus-format metrics at URL (JSON)
  query   BASE END_S PID REPS WINDOW EXTRA
                                   times the long-range queries (QUERIES below, 30 d and 365 d
                                   ending at END_S, 1 h step) against BASE, REPS times each;
                                   prints JSON with the first and the median latency
  du      DIR                      bytes the folder occupies on disk (st_blocks * 512)
  files   DIR                      allocated and apparent bytes per file kind (JSON)
  report  RESULTS.json             prints the tables from the collected results
  export  URL SPAN_S END_MS OUT    the raw samples of every series an aggregator (or any
                                   Prometheus-compatible API) holds over its last SPAN_S seconds
                                   (but the aggregator's own outpost_agent_up),
                                   moved back by whole days to end before END_MS (a closed day),
                                   written as OUT/rw_500.bin and OUT/meta.json in the layout of
                                   gen_dataset.py (one shard, requests of 500 samples in time
                                   order, one sample a TimeSeries with its full label set)
Loopback only.
"""
import http.client, json, os, statistics, struct, sys, threading, time, urllib.parse, urllib.request

HZ = os.sysconf('SC_CLK_TCK')


def cpu_s(pid):
    with open(f'/proc/{pid}/stat') as f:
        s = f.read()
    fields = s[s.rindex(')') + 2:].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def loopback(url):
    u = urllib.parse.urlsplit(url)
    if u.hostname not in ('127.0.0.1', 'localhost'):
        sys.exit(f'{url}: loopback only')
    return u


def send(url, pid, path, samples):
    u = loopback(url)
    shards = {}
    with open(path, 'rb') as f:
        data = f.read()
    off = 0
    while off < len(data):
        sh, n = struct.unpack_from('<II', data, off)
        off += 8
        shards.setdefault(sh, []).append(data[off:off + n])
        off += n
    hdr = {'Content-Encoding': 'snappy', 'Content-Type': 'application/x-protobuf',
           'X-Prometheus-Remote-Write-Version': '0.1.0', 'User-Agent': 'bench-storage'}
    lock = threading.Lock()
    st = {'sent': 0, 'refused': 0, 'first_errors': []}

    def worker(bodies):
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        for b in bodies:
            for attempt in range(3):
                try:
                    c.request('POST', u.path, body=b, headers=hdr)
                    r = c.getresponse()
                    msg = r.read()
                    break
                except (ConnectionError, http.client.HTTPException):
                    c.close()
                    c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
                    if attempt == 2:
                        raise
            with lock:
                st['sent'] += 1
                if r.status // 100 != 2:
                    st['refused'] += 1
                    if len(st['first_errors']) < 3:
                        st['first_errors'].append(f'{r.status} {msg[:160]!r}')

    th = [threading.Thread(target=worker, args=(b,)) for b in shards.values()]
    c0, t0, ct0 = cpu_s(pid), time.monotonic(), os.times()
    for t in th:
        t.start()
    for t in th:
        t.join()
    el = time.monotonic() - t0
    c1, ct1 = cpu_s(pid), os.times()
    print(json.dumps({'requests': st['sent'], 'refused_requests': st['refused'],
                      'first_errors': st['first_errors'], 'wall_s': round(el, 2),
                      'samples': samples, 'samples_per_s': round(samples / el),
                      'server_cpu_s': round(c1 - c0, 2),
                      'loader_cpu_s': round((ct1.user + ct1.system) - (ct0.user + ct0.system), 2)}))


def idle(pid, min_s=5.0, max_s=900.0):
    t0 = time.monotonic()
    quiet = 0
    last = cpu_s(pid)
    while True:
        time.sleep(2)
        now = cpu_s(pid)
        quiet = quiet + 1 if now - last < 0.04 else 0
        last = now
        el = time.monotonic() - t0
        if (quiet >= 3 and el >= min_s) or el >= max_s:
            print(round(el, 1))
            return


def du(path):
    tot = 0
    for root, dirs, files in os.walk(path):
        for n in files + dirs:
            try:
                tot += os.lstat(os.path.join(root, n)).st_blocks * 512
            except FileNotFoundError:
                pass
    return tot


def files(path):
    out = {}
    for root, dirs, fs in os.walk(path):
        for n in fs:
            st = os.lstat(os.path.join(root, n))
            kind = os.path.splitext(n)[1] or n.rstrip('0123456789')
            d = out.setdefault(kind, {'files': 0, 'allocated': 0, 'apparent': 0})
            d['files'] += 1
            d['allocated'] += st.st_blocks * 512
            d['apparent'] += st.st_size
    print(json.dumps(dict(sorted(out.items(), key=lambda kv: -kv[1]['allocated']))))


def prom(d):
    blocks, bbytes, bsamples, bmin, bmax = 0, 0, 0, None, None
    for n in sorted(os.listdir(d)):
        m = os.path.join(d, n, 'meta.json')
        if os.path.isfile(m):
            j = json.load(open(m))
            blocks += 1
            bbytes += du(os.path.join(d, n))
            bsamples += j['stats']['numSamples']
            bmin = j['minTime'] if bmin is None else min(bmin, j['minTime'])
            bmax = j['maxTime'] if bmax is None else max(bmax, j['maxTime'])
    wal = du(os.path.join(d, 'wal')) if os.path.isdir(os.path.join(d, 'wal')) else 0
    ch = du(os.path.join(d, 'chunks_head')) if os.path.isdir(os.path.join(d, 'chunks_head')) else 0
    print(json.dumps({'blocks': blocks, 'block_bytes': bbytes, 'block_samples': bsamples,
                      'block_min_ms': bmin, 'block_max_ms': bmax, 'wal_bytes': wal,
                      'chunks_head_bytes': ch}))


def metrics(url, names):
    """{NAME: {series: value}, NAME_sum: total} for each named metric."""
    loopback(url)
    body = urllib.request.urlopen(url, timeout=60).read().decode()
    out = {n: {} for n in names}
    for line in body.splitlines():
        if line.startswith('#') or not line.strip():
            continue
        key, _, val = line.rpartition(' ')
        name = key.split('{')[0]
        if name in out:
            out[name][key] = float(val)
    for n in names:
        out[n + '_sum'] = sum(out[n].values())
    print(json.dumps(out))


# Long-range queries at a 1 h step; the last reads every series.
# WINDOW is 1h, or twice the data's interval when that is longer (rate needs two points).
# `last_over_time` keeps the metric name, so the count over every series is valid PromQL.
QUERIES = {
    'cpu_sum_rate': 'sum(rate(node_cpu_seconds_total[WINDOW]))',
    'load1_max': 'max_over_time(node_load1[WINDOW])',
    'all_series_count': 'count(last_over_time({job="node"}[WINDOW]))',
}
RANGES = {'30d': 30 * 86400, '365d': 365 * 86400}


def query(base, end, pid, reps, window, extra):
    loopback(base)
    out = {}
    for rname, span in RANGES.items():
        for qname, q in QUERIES.items():
            q = q.replace('WINDOW', window)
            params = {'query': q, 'start': str(end - span), 'end': str(end), 'step': '3600'}
            url = base + '/api/v1/query_range?' + urllib.parse.urlencode(params) + (('&' + extra) if extra else '')
            lat, cpu, err = [], [], None
            body = b''
            for _ in range(reps):
                c0 = cpu_s(pid)
                t0 = time.perf_counter()
                try:
                    body = urllib.request.urlopen(url, timeout=600).read()
                except Exception as e:  # an HTTP error or a timeout: report it, do not stop
                    err = str(e)[:200]
                    try:
                        err += ' ' + e.read().decode()[:300]
                    except Exception:
                        pass
                    break
                lat.append(time.perf_counter() - t0)
                cpu.append(cpu_s(pid) - c0)
            r = {'query': q, 'range': rname}
            if err:
                r['error'] = err
            if lat:
                res = json.loads(body)['data']['result']
                total = 0.0
                for s in res:
                    for _, v in s['values']:
                        try:
                            total += float(v)
                        except ValueError:
                            pass
                r.update({'ms_all': [round(x * 1000, 1) for x in lat], 'ms_first': round(lat[0] * 1000, 1),
                          'ms_median': round(statistics.median(lat) * 1000, 1),
                          'ms_median_warm': round(statistics.median(lat[1:] or lat) * 1000, 1),
                          'server_cpu_s_median': round(statistics.median(cpu), 3),
                          'result_series': len(res), 'result_points': sum(len(s['values']) for s in res),
                          'sum_of_values': round(total, 3)})
            out[f'{qname}_{rname}'] = r
    print(json.dumps(out))


def export(url, span_s, end_ms, out):
    import snappy
    loopback(url)
    # outpost_agent_up is the aggregator's own series (written every second), not the agent's.
    q = urllib.parse.urlencode({'query': '{__name__=~".+",__name__!="outpost_agent_up"}[%ds]' % span_s})
    body = json.loads(urllib.request.urlopen(f'{url}/api/v1/query?{q}', timeout=600).read())
    series = body['data']['result']
    if not series:
        sys.exit(f'{url} holds no samples in its last {span_s} s')
    t_max = max(int(round(float(v[-1][0]) * 1000)) for v in (s['values'] for s in series))
    day = 86_400_000
    shift = max(0, -(-(t_max - end_ms + 1) // day)) * day
    samples = []  # (ts, series index, value)
    for i, s in enumerate(series):
        for t, v in s['values']:
            samples.append((int(round(float(t) * 1000)) - shift, i, float(v)))
    samples.sort()
    enc = [enc_labels(s['metric']) for s in series]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'rw_500.bin'), 'wb') as f:
        for k in range(0, len(samples), 500):
            req = b''.join(ld(1, enc[i] + ld(2, b'\x09' + struct.pack('<d', v) + b'\x10' + varint(ts)))
                           for ts, i, v in samples[k:k + 500])
            c = snappy.compress(req)
            f.write(struct.pack('<II', 0, len(c)) + c)
    gaps = sorted(b[0] - a[0] for s in series for a, b in zip(s['values'], s['values'][1:]))
    meta = {'source': url, 'series': len(series), 'samples': len(samples),
            'points': round(len(samples) / len(series)), 'hosts': 1,
            'interval_s': round(gaps[len(gaps) // 2], 3) if gaps else None,
            't_min_ms': samples[0][0], 't_max_ms': samples[-1][0], 'shift_ms': shift, 'batch': 500, 'shards': 1}
    json.dump(meta, open(os.path.join(out, 'meta.json'), 'w'))
    print(json.dumps(meta))


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7f, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def ld(field, payload):  # a length-delimited protobuf field
    return bytes([(field << 3) | 2]) + varint(len(payload)) + payload


def enc_labels(labels):  # a label set as the repeated Label fields of a TimeSeries
    return b''.join(ld(1, ld(1, k.encode()) + ld(2, v.encode())) for k, v in sorted(labels.items()))


def fmt(x, nd=2):
    if x is None:
        return 'n/a'
    if isinstance(x, float):
        return f'{x:,.{nd}f}'
    return f'{x:,}'


def ratio(a, b):
    return f'{a / b:.2f}' if a is not None and b else 'n/a'


def report(path):
    R = json.load(open(path))
    stores = ['outpost', 'prometheus', 'victoriametrics']
    for phase in ('dense', 'year', 'host'):
        P = R.get(phase)
        if not P:
            continue
        meta = P['meta']
        print(f"\n== {phase} data set: {meta['series']:,} series x {meta['points']:,} points every "
              f"{meta['interval_s']} s = {meta['samples']:,} samples, "
              f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(meta['t_min_ms'] / 1000))} .. "
              f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(meta['t_max_ms'] / 1000))} UTC")
        print(f"{'figure':44} {'outpost':>14} {'prometheus':>14} {'victoria':>14} {'o/vm':>6} {'o/prom':>6}")

        def row(label, vals, nd=2, ratios=True):
            o, p, v = vals
            print(f"{label:44} {fmt(o, nd):>14} {fmt(p, nd):>14} {fmt(v, nd):>14} "
                  f"{ratio(o, v) if ratios else '':>6} {ratio(o, p) if ratios else '':>6}")

        g = lambda s, *k: (lambda d: d)(P.get(s, {}).get(k[0]) if len(k) == 1 else P.get(s, {}).get(k[0], {}).get(k[1]))
        n = meta['samples']
        row('samples sent', [n, n, n], 0, False)
        row('refused requests', [g(s, 'load', 'refused_requests') for s in stores], 0, False)
        stored = [g(s, 'stored_samples') for s in stores]
        ost = P.get('outpost', {}).get('storage')
        if ost and ost.get('partitions'):
            stored[0] = sum(p.get('samples') or 0 for p in ost['partitions'] if p.get('resolution', 'raw') == 'raw') + \
                (ost.get('headSamples') or 0)
        row('samples stored (store\'s own count; raw)', stored, 0, False)
        row('load wall s', [g(s, 'load', 'wall_s') for s in stores])
        row('load: server CPU µs/sample', [us(g(s, 'load', 'server_cpu_s'), n) for s in stores], 3)
        row('load: loader CPU µs/sample', [us(g(s, 'load', 'loader_cpu_s'), n) for s in stores], 3)
        row('compaction: wall s until compacted', [g(s, 'compact_wall_s') for s in stores], 1)
        row('compaction: server CPU µs/sample', [us(g(s, 'compact_cpu_s'), n) for s in stores], 3)
        row('disk: du of data folder, bytes', [g(s, 'du_bytes') for s in stores], 0, False)
        row('disk: du B/sample sent', [per(g(s, 'du_bytes'), n) for s in stores], 2)
        row('disk: apparent size (sum of file sizes), bytes', [g(s, 'apparent_bytes') for s in stores], 0, False)
        row('disk: apparent B/sample sent', [per(g(s, 'apparent_bytes'), n) for s in stores], 2)
        own = [g(s, 'own_bytes') for s in stores]
        snap = P.get('prometheus', {}).get('snapshot')
        if snap and snap.get('block_samples'):
            own[1] = snap['block_bytes']
        row("store's accounting: bytes (a)", own, 0, False)
        row("store's accounting: B/sample sent", [per(b, n) for b in own], 2)
        raw = P.get('outpost', {}).get('storage')
        raw_b = raw_n = None
        if raw:
            rp = [p for p in raw.get('partitions') or [] if p.get('resolution', 'raw') == 'raw']
            raw_b, raw_n = sum(p.get('bytes') or 0 for p in rp), sum(p.get('samples') or 0 for p in rp)
        vm_b = vm_n = None
        vmm = P.get('victoriametrics', {}).get('vm_metrics')
        if vmm:
            vm_b = sum(v for k, v in vmm['vm_data_size_bytes'].items() if 'storage/' in k)
            vm_n = sum(v for k, v in vmm['vm_rows'].items() if 'storage/' in k)
        pb = pn = None
        if snap and snap.get('block_samples'):
            pb, pn = snap['block_bytes'], snap['block_samples']
        row('samples only (b): B/sample', [per(raw_b, raw_n), per(pb, pn), per(vm_b, vm_n)], 3)
        print("  (a) outpost: outpostStats.storage.bytes (all resolutions, index, memtables); prometheus: blocks\n"
              "      of the snapshot (the head written as a block too), else blocks; victoriametrics: vm_data_size_bytes\n"
              "      (storage and indexdb)\n"
              "  (b) outpost: raw partitions' bytes / raw samples; prometheus: snapshot blocks (index included);\n"
              "      victoriametrics: storage/* bytes / rows (indexdb excluded)")
        pr = P.get('prometheus', {}).get('prom', {})
        if pr:
            print(f"  prometheus: {pr.get('blocks')} blocks {fmt(pr.get('block_bytes'), 0)} B holding "
                  f"{fmt(pr.get('block_samples'), 0)} samples = {fmt(per(pr.get('block_bytes'), pr.get('block_samples')))} B/sample; "
                  f"wal {fmt(pr.get('wal_bytes'), 0)} B, chunks_head {fmt(pr.get('chunks_head_bytes'), 0)} B "
                  f"(head: samples after {fmt_ms(pr.get('block_max_ms'))})")
            sn = P['prometheus'].get('snapshot')
            if sn:
                print(f"  prometheus snapshot (head written as a block too): {sn.get('blocks')} blocks "
                      f"{fmt(sn.get('block_bytes'), 0)} B, {fmt(sn.get('block_samples'), 0)} samples = "
                      f"{fmt(per(sn.get('block_bytes'), sn.get('block_samples')))} B/sample")
            rj = P['prometheus'].get('rejected')
            if rj:
                print('  prometheus counters: ' + ', '.join(f"{k[:-4]} {v:,.0f}" for k, v in rj.items() if k.endswith('_sum')))
        vm = P.get('victoriametrics', {}).get('vm_metrics')
        if vm:
            print('  victoriametrics /metrics: ' + ', '.join(f"{k} {v:,.0f}" for m in ('vm_data_size_bytes', 'vm_rows') for k, v in vm.get(m, {}).items()))
        op = P.get('outpost', {}).get('storage')
        if op:
            parts = op.get('partitions') or []
            by_res = {}
            unmerged = []
            for p in parts:
                r = p.get('resolution', 'raw')
                d = by_res.setdefault(r, {'partitions': 0, 'samples': 0, 'bytes': 0})
                d['partitions'] += 1
                d['samples'] += p.get('samples') or 0
                d['bytes'] += p.get('bytes') or 0
                if not p.get('merged'):
                    unmerged.append(f"{r}:{p.get('start')}")
            print(f"  outpost: series {op.get('series')}, samples {fmt(op.get('samples'), 0)} "
                  f"({fmt(op.get('headSamples'), 0)} in the head), bytes {fmt(op.get('bytes'), 0)}")
            for r, d in by_res.items():
                print(f"  outpost {r}: {d['partitions']} partitions, {fmt(d['samples'], 0)} samples, "
                      f"{fmt(d['bytes'], 0)} B ({fmt(per(d['bytes'], d['samples']))} B/sample)")
            raw = by_res.get('raw', {}).get('bytes')
            rolled = {r: d for r, d in by_res.items() if r != 'raw'}
            if rolled and raw:
                for r, d in rolled.items():
                    print(f"  outpost rollup {r}: {100 * d['bytes'] / raw:.2f} % of the raw bytes")
            elif not rolled:
                print('  outpost: no rollup resolutions reported (no downsampling in this build)')
            print(f"  outpost partitions not merged: {', '.join(unmerged) if unmerged else 'none'}")
            if P['outpost'].get('files'):
                print(f"  outpost files (allocated/apparent bytes): " + ', '.join(
                    f"{k} {v['files']}: {v['allocated']:,}/{v['apparent']:,}" for k, v in P['outpost']['files'].items()))
            if P['outpost'].get('maintain'):
                print(f"  outpost offline maintain: {json.dumps(P['outpost']['maintain'])}")
        q = {s: P.get(s, {}).get('queries') for s in stores}
        if any(q.values()):
            span_d = (meta['t_max_ms'] - meta['t_min_ms']) / 86400e3
            print(f"\n  range queries, 1 h step, ending at the data's end; data spans {span_d:.1f} days"
                  f"{'' if span_d >= 364 else ' (shorter than the 365 d range: the query still scans it all)'}")
            print(f"  {'query':52} {'outpost ms':>11} {'prom ms':>11} {'vm ms':>11} {'o/vm':>6} {'o/prom':>6}"
                  f"  (median of warm runs; first run in brackets)")
            keys = next(v for v in q.values() if v).keys()
            for k in keys:
                vals = [(q[s] or {}).get(k, {}) for s in stores]
                med = [v.get('ms_median_warm') for v in vals]
                first = [v.get('ms_first') for v in vals]
                cells = [f"{fmt(m, 1)} ({fmt(f, 0)})" if m is not None else ('error' if v.get('error') else 'n/a')
                         for m, f, v in zip(med, first, vals)]
                label = f"{vals[0].get('query') or k} [{vals[0].get('range', '')}]"
                print(f"  {label[:52]:52} {cells[0]:>11} {cells[1]:>11} {cells[2]:>11} {ratio(med[0], med[2]):>6} {ratio(med[0], med[1]):>6}")
                pts = [v.get('result_points') for v in vals]
                sums = [v.get('sum_of_values') for v in vals]
                print(f"  {'':52} points {pts}, sum of values {sums}")
                for s, v in zip(stores, vals):
                    if v.get('error'):
                        print(f"    {s}: {v['error']}")


def us(cpu, n):
    return round(cpu * 1e6 / n, 3) if cpu is not None and n else None


def per(b, n):
    return round(b / n, 3) if b is not None and n else None


def fmt_ms(ms):
    return time.strftime('%Y-%m-%d %H:%M', time.gmtime(ms / 1000)) if ms else 'n/a'


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    cmd = a[0]
    if cmd == 'send':
        send(a[1], int(a[2]), a[3], int(a[4]))
    elif cmd == 'idle':
        idle(int(a[1]), float(a[2]) if len(a) > 2 else 5.0, float(a[3]) if len(a) > 3 else 900.0)
    elif cmd == 'cpu':
        print(cpu_s(int(a[1])))
    elif cmd == 'prom':
        prom(a[1])
    elif cmd == 'metrics':
        metrics(a[1], a[2:])
    elif cmd == 'query':
        query(a[1], int(a[2]), int(a[3]), int(a[4]), a[5], a[6] if len(a) > 6 else '')
    elif cmd == 'files':
        files(a[1])
    elif cmd == 'du':
        print(du(a[1]))
    elif cmd == 'export':
        export(a[1], int(a[2]), int(a[3]), a[4])
    elif cmd == 'report':
        report(a[1])
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
