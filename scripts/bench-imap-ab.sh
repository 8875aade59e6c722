#!/usr/bin/env bash
# Before/after for the cold sync on a machine whose speed drifts: the realistic folder of
# scripts/bench-imap-sync.sh is built once, then two envelopd builds take turns (a fresh daemon
# with an empty cache each round, straight from Dovecot measured in the same round), so a slower
# minute hits both alike. Prints each round and the median per build: seconds, envelopd's CPU
# seconds, peak RSS, and the time as a ratio of the straight transfer's.
# Needs root (Postfix/Dovecot from scripts/mailserver.sh), python3.
#
#   scripts/bench-imap-ab.sh BIN_A BIN_B [rounds (default 4)] [messages (default 1000)]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BIN_A BIN_B [rounds] [messages]" >&2; exit 2; }
A=$(realpath "$1") B=$(realpath "$2")
rounds=${3:-4} n=${4:-1000}
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$PATH:/usr/sbin"
V="$(cd "${ENVELOPD_VECTORS:-../shared/vectors}" && pwd)/rfc9216"
# shellcheck source=scripts/bench-common.sh
. "$root/scripts/bench-common.sh"
E=$A
bench_imap_lab bench-ab
bench_fill_realistic "$n" 60
results=$work/results
: >"$results"
for r in $(seq "$rounds"); do
  for which in A B; do
    if [ $which = A ]; then E=$A; else E=$B; fi
    listen=$(port)
    bench_bob_imap "$listen" "$(port)"
    python3 - "$IMAP_PORT" "$listen" "$n" "$epid" "$which" "$r" >>"$results" <<'EOF'
import imaplib, os, sys, time
direct, proxy, n, epid, which, r = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                   int(sys.argv[4]), sys.argv[5], sys.argv[6])
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick
def sync(port):
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login("bob@smime.example", "bob-pw")
    m.select("INBOX", readonly=True)
    c0, start = cpu(epid), time.perf_counter()
    typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
    took, used = time.perf_counter() - start, cpu(epid) - c0
    assert typ == "OK"
    bodies = [d[1] for d in data if isinstance(d, tuple)]
    assert len(bodies) == n, (len(bodies), n)
    m.logout()
    return took, used, sum(len(b) for b in bodies)
sync(direct)
straight, _, _ = sync(direct)
took, used, size = sync(proxy)
peak = int([l for l in open(f"/proc/{epid}/status") if l.startswith("VmHWM")][0].split()[1]) / 1024
print(which, r, f"{took:.3f}", f"{used:.2f}", f"{peak:.1f}", f"{straight:.3f}", size)
EOF
    kill "$epid"; wait "$epid" 2>/dev/null || true; epid=""
    tail -1 "$results" | awk '{printf "round %s %s: %6.2f s  CPU %5.2f s  peak %6.1f MiB  straight %5.2f s\n", $2, $1, $3, $4, $5, $6}'
  done
done
python3 - "$results" "$A" "$B" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for which, path in (("A", sys.argv[2]), ("B", sys.argv[3])):
    mine = [r for r in rows if r[0] == which]
    med = lambda i: statistics.median(float(r[i]) for r in mine)
    ratio = statistics.median(float(r[2]) / float(r[5]) for r in mine)
    print(f"{which} {path}: median {med(2):.2f} s, CPU {med(3):.2f} s, peak {max(float(r[4]) for r in mine):.1f} MiB,"
          f" {ratio:.2f}x the straight transfer's time")
EOF
