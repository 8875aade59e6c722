#!/usr/bin/env bash
# POP3 benchmark, all in one run: retrieving a realistic mailbox (N messages, half of them
# S/MIME, 5 KB to 20 MB) the way practice software does (STAT, LIST, UIDL, then RETR of every
# message), straight from Dovecot and through envelopd: a cold first session (every S/MIME
# message opened for LIST's sizes, then for RETR beyond what the cache holds) and a warm second
# one (sizes remembered). MB/s, ratios against straight, envelopd's CPU and peak memory.
# Needs root (Postfix/Dovecot from scripts/mailserver.sh), python3.
#
#   scripts/bench-pop3.sh [--quick]        (--quick: 100 messages instead of 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$PATH:/usr/sbin"
V="$(cd "${ENVELOPD_VECTORS:-../shared/vectors}" && pwd)/rfc9216"
# shellcheck source=scripts/bench-common.sh
. "$root/scripts/bench-common.sh"
n=1000
[ "${1:-}" = --quick ] && n=100

if [ -z "${ENVELOPD_BIN:-}" ]; then
  echo "== building envelopd (release)"
  cargo build --quiet --release -p envelopd
fi
E="${ENVELOPD_BIN:-$root/target/release/envelopd}"
bench_imap_lab bench-pop3
bench_fill_realistic "$n" 50

listen=$(port)
bench_bob_imap "$(port)" "$(port)" "$listen"
rss_before=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$epid/status")

python3 - "$POP3_PORT" "$listen" "$n" "$epid" <<'EOF'
import os, poplib, sys, time
direct, proxy, n, epid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def session(port):
    """STAT, LIST, UIDL, RETR of every message; times of the listing and of the whole."""
    p = poplib.POP3("127.0.0.1", port, timeout=600)
    p.user("bob@smime.example")
    p.pass_("bob-pw")
    start = time.perf_counter()
    count, total = p.stat()
    _, listing, _ = p.list()
    p.uidl()
    listed = time.perf_counter() - start
    sizes = [int(l.split()[1]) for l in listing]
    got, shown = 0, 0
    for i in range(1, count + 1):
        _, lines, octets = p.retr(i)
        assert octets == sizes[i - 1], (i, octets, sizes[i - 1])
        got += octets
        shown += lines[0].startswith(b"X-Envelopd: decrypted=aes")
    took = time.perf_counter() - start
    p.quit()
    assert count == n and got == total, (count, n, got, total)
    return listed, took, got, shown

session(direct)  # Dovecot reads the mailbox into its page cache once; not part of the comparison
d_list, d_took, d_bytes, _ = session(direct)
cpu0 = cpu_seconds(epid)
c_list, c_took, c_bytes, shown = session(proxy)
cpu1 = cpu_seconds(epid)
w_list, w_took, w_bytes, _ = session(proxy)
cpu2 = cpu_seconds(epid)
d2_list, d2_took, _, _ = session(direct)
d_list, d_took = min(d_list, d2_list), min(d_took, d2_took)
mb = lambda b: b / 1e6
print()
print(f"retrieving {n} messages by POP3 (STAT, LIST, UIDL, RETR each; {mb(d_bytes):.0f} MB stored,"
      f" {shown} S/MIME shown decrypted and verified):")
print(f"  straight from Dovecot        {d_took:7.2f} s  {mb(d_bytes) / d_took:8.1f} MB/s   1.00x   (listing {d_list * 1000:7.1f} ms)")
print(f"  through envelopd, cold       {c_took:7.2f} s  {mb(c_bytes) / c_took:8.1f} MB/s   {c_took / d_took:5.2f}x   (listing {c_list * 1000:7.1f} ms: sizes of every S/MIME message worked out; envelopd CPU {cpu1 - cpu0:.2f} s)")
print(f"  through envelopd, warm       {w_took:7.2f} s  {mb(w_bytes) / w_took:8.1f} MB/s   {w_took / d_took:5.2f}x   (listing {w_list * 1000:7.1f} ms: sizes remembered; envelopd CPU {cpu2 - cpu1:.2f} s)")
EOF
largest=$(stat -c %s "$work"/provider/mail/smime.example/bob/cur/* | sort -n | tail -1)
echo "envelopd RSS: $rss_before MiB at start, peak $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$epid/status");" \
  "largest stored message $(awk -v b="$largest" 'BEGIN {printf "%.1f MiB: bound 64 MiB + 2x = %.1f MiB", b/1048576, 64 + 2*b/1048576}')"
