#!/usr/bin/env python3
"""The tables of BENCHMARKS.md sections 1-3 from the `interleaved:` lines of K processes
(benches/scripts/run.sh writes one full log and K - 1 repeat logs).

Per row and contender: the median over the processes of each process's median over its 41
turns. Per row, a ratio: the median over the processes of the ratio within each process (both
contenders of a ratio come from the same turns of one process); the range over the processes
is printed after each table.

Usage: tables.py [--previous BENCHMARKS.md --label COMMIT] <logs...>
With --previous, the last column is the ratio the previous BENCHMARKS.md tables give."""
import sys, re, math, statistics as st, collections

args = sys.argv[1:]
previous, label = None, 'previous'
while args and args[0].startswith('--'):
    if args[0] == '--previous': previous = args[1]
    elif args[0] == '--label': label = args[1]
    else: sys.exit(f'unknown option {args[0]}')
    args = args[2:]
if not args: sys.exit(__doc__)

def parse(path):
    rows = collections.OrderedDict()
    for line in open(path):
        if line.startswith('interleaved: '):
            parts = line.split()
            rows[parts[1]] = {k: float(v) for k, v in (p.split('=') for p in parts[2:])}
    return rows

procs = [parse(p) for p in args]
names = list(procs[0].keys())
for p in procs[1:]:
    for n in p:
        if n not in names: names.append(n)

def fig(name, who):
    return st.median(p[name][who] for p in procs if name in p)

def ratio(name, num, den):
    return st.median(p[name][num] / p[name][den] for p in procs if name in p)

def nproc(name):
    return sum(1 for p in procs if name in p)

def spread(name, num, den):
    v = [p[name][num] / p[name][den] for p in procs if name in p]
    return min(v), max(v)

def sig3(x):
    """Three significant digits, trailing zeros kept (the tables' style: 0.822, 1.10, 26.3, 106)."""
    if x < 1: return f'{x:.3f}'
    if x < 10: return f'{x:.2f}'
    if x < 100: return f'{x:.1f}'
    return f'{x:.0f}'

def ns(x):
    return f'{sig3(x / 1000)} µs' if x >= 1000 else f'{sig3(x)} ns'

def r(x):
    return f'{sig3(x)}×'

old = {}
def old_ratios(path):
    """Old table ratios from BENCHMARKS.md: lookup (layout, n, query) -> bsearch/ours ..."""
    text = open(path).read()
    for m in re.finditer(r'^\| (random|run|tcp|bpf|synthetic) \| (\d+) \| (\w+) \|(.*)$', text, re.M):
        cells = [c.strip() for c in m.group(4).split('|')]
        old[('lookup', m.group(1), m.group(2), m.group(3))] = cells[5].strip('*')
    for m in re.finditer(r'^\| (redirect(?:_x64)?/\w+) \|(.*)$', text, re.M):
        cells = [c.strip() for c in m.group(2).split('|')]
        old[('redirect', m.group(1))] = cells[5].strip('*')
    for m in re.finditer(r'^\| ((?:near_)?D\d+/\d+) \|(.*)$', text, re.M):
        cells = [c.strip() for c in m.group(2).split('|')]
        old[('stack', m.group(1))] = cells[2].strip('*')
if previous:
    old_ratios(previous)

K = len(procs)
print(f'## processes: {K}')
# Section 2: lookup
print('\n### lookup\n')
print(f'| layout | N | query | ours | bsearch | bsearch published | bsearch (rank only) | linear | **bsearch / ours** | published / ours | rank only / ours | linear / ours | bsearch / ours at `{label}` |')
print('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
stats = []
for n in names:
    if not n.startswith('lookup/'): continue
    _, layout, query, size = n.split('/')
    row = procs[0][n]
    lin = 'linear' in row
    b = ratio(n, 'bsearch', 'ours'); stats.append((layout, size, query, b, ratio(n, 'bsearch_published', 'ours'), ratio(n, 'linear', 'ours') if lin else None, fig(n, 'ours'), spread(n, 'bsearch', 'ours')))
    cells = [layout, size, query, ns(fig(n, 'ours')), ns(fig(n, 'bsearch')), ns(fig(n, 'bsearch_published')), ns(fig(n, 'bsearch_rank')),
             ns(fig(n, 'linear')) if lin else '–', f'**{r(b)}**', r(ratio(n, 'bsearch_published', 'ours')), r(ratio(n, 'bsearch_rank', 'ours')),
             r(ratio(n, 'linear', 'ours')) if lin else '–', old.get(('lookup', layout, size, query), '–')]
    print('| ' + ' | '.join(cells) + ' |')
g = math.exp(sum(math.log(s[3]) for s in stats) / len(stats))
gp = math.exp(sum(math.log(s[4]) for s in stats) / len(stats))
print(f'\nrows {len(stats)}; bsearch/ours >= 1.5: {sum(s[3] >= 1.5 for s in stats)}; 1.0-1.5: {sum(1.0 <= s[3] < 1.5 for s in stats)}; < 1.0: {sum(s[3] < 1.0 for s in stats)}; geomean {g:.3f}')
print(f'published/ours >= 1.5: {sum(s[4] >= 1.5 for s in stats)}; < 1.0: {sum(s[4] < 1.0 for s in stats)}; geomean {gp:.3f}')
for s in stats:
    print('  ', s[0], s[1], s[2], f'{s[3]:.3f} (processes {s[7][0]:.2f}-{s[7][1]:.2f}) ours {s[6]:.2f}', '' if s[5] is None else f'linear/ours {s[5]:.1f}')
# Section 1: redirect
print('\n### redirect\n')
print(f'| case | module | kernel | module inline | kernel inline | previous | **kernel / module** | goal ≥ 1.0× | kernel inline / module inline | kernel / module at `{label}` |')
print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |')
for n in names:
    if not n.startswith('redirect'): continue
    per = 64 if n.startswith('redirect_x64') else 1
    if 'module' not in procs[0][n]: continue
    k = ratio(n, 'kernel', 'module')
    goal = f'met (+{(k-1)*100:.0f} %)' if k >= 1 else f'**missed** ({(1-k)*100:.0f} % short)'
    cells = [n, ns(fig(n, 'module')/per), ns(fig(n, 'kernel')/per), ns(fig(n, 'module_inline')/per), ns(fig(n, 'kernel_inline')/per), ns(fig(n, 'previous')/per),
             f'**{r(k)}**', goal, r(ratio(n, 'kernel_inline', 'module_inline')), old.get(('redirect', n), '–')]
    print('| ' + ' | '.join(cells) + ' |')
    lo, hi = spread(n, 'kernel', 'module'); print(f'<!-- {n}: processes {lo:.2f}-{hi:.2f} -->')
# Section 3: stack check
print('\n### stack check\n')
print(f'| frames / F | ours | kernel | **kernel / ours** | goal | at `{label}` |')
print('| --- | ---: | ---: | ---: | --- | ---: |')
for n in names:
    if not n.startswith('stack'): continue
    lab = n.split('/', 1)[1]
    k = ratio(n, 'kernel', 'ours')
    cells = [lab, ns(fig(n, 'ours')), ns(fig(n, 'kernel')), f'**{r(k)}**', 'met' if k >= 1 else '**missed**', old.get(('stack', lab), '–')]
    print('| ' + ' | '.join(cells) + ' |')
    lo, hi = spread(n, 'kernel', 'ours'); print(f'<!-- {n}: processes {lo:.2f}-{hi:.2f} -->')
