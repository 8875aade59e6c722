#!/usr/bin/env bash
# Instructions envelopd executes per signed+encrypted 4 KiB message, counted by valgrind's
# callgrind: deterministic, so a change of 1 % shows, where this shared VM's timings vary by
# ±8 % from run to run (and it has no hardware counters for `perf stat`). Two runs of N1 and N2
# messages through one envelopd each; the difference divided by N2 - N1 leaves out start-up
# (the PKCS#12 key derivation alone is a third of a short run). Prints the total per message and
# the functions that take at least 0.5 % of it (inclusive). Under valgrind aws-lc picks its AVX2
# RSA code instead of the BMI2/ADX one, so the RSA share differs from a real run's; the other
# functions' counts are what they are.
#
#   scripts/instructions-per-message.sh [N1 N2]     (defaults 50 250; needs valgrind, postfix)
#
# IPM_MIN_PERCENT=0.05 lists smaller functions too (default 0.5); IPM_KEEP=DIR keeps the second
# run's callgrind file there (DIR/callgrind.out), for `callgrind_annotate --tree=caller`.
# ENVELOPD_BIN: another build to count (e.g. an older commit's or another profile's).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
n1=${1:-50} n2=${2:-250}
export PATH="$PATH:/usr/sbin"
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
V="$(cd "${ENVELOPD_VECTORS:-../shared/vectors}" && pwd)/rfc9216"
if [ -z "${ENVELOPD_BIN:-}" ]; then
  cargo build --quiet --release -p envelopd
fi
E="${ENVELOPD_BIN:-$root/target/release/envelopd}"

# shellcheck source=scripts/bench-common.sh
. "$root/scripts/bench-common.sh"
bench_workdir
sink_port=$(port) listen=$(port)
user=()
[ "$(id -u)" = 0 ] && user=(-u nobody)
smtp-sink "${user[@]}" -m 512 "127.0.0.1:$sink_port" 1024 </dev/null >/dev/null 2>&1 &
pids+=($!)
bench_proxy_toml "$listen" "$sink_port"
mkmsg small.eml 4096

count() { # messages output-file
  # The threshold set here, as `envelopd run` would set it by restarting itself (valgrind
  # would then measure only the restart).
  MALLOC_MMAP_THRESHOLD_=1048576 RUST_LOG=info valgrind --tool=callgrind --callgrind-out-file="$2" "$E" run --config proxy.toml 2>>envelopd.log &
  local vg=$!
  wait_port "$listen"
  smtp-source -d -s 4 -m "$1" -F small.eml -f alice@smime.example -t bob@smime.example "127.0.0.1:$listen"
  kill -INT "$vg"
  wait "$vg" || true
}
echo "== $n1 and $n2 messages through envelopd under callgrind" >&2
count "$n1" a.out
count "$n2" b.out
sent=$(grep -c 'decision=encrypted.*reply=250' envelopd.log || true)
[ "$sent" = $((n1 + n2)) ] || { echo "only $sent of $((n1 + n2)) messages were signed, encrypted and accepted" >&2; exit 1; }
for f in a b; do
  callgrind_annotate --inclusive=yes --threshold=100 "$f.out" 2>/dev/null |
    sed -n 's/^ *\([0-9,]*\) ([ 0-9.]*%) *\(.*\)$/\1 \2/p' | awk '{ gsub(",", "", $1) } 1' >"$f.txt"
done
if [ -n "${IPM_KEEP:-}" ]; then
  mkdir -p "$IPM_KEEP" && cp b.out "$IPM_KEEP/callgrind.out"
fi
python3 - "$n1" "$n2" "${IPM_MIN_PERCENT:-0.5}" <<'EOF'
import re, sys
n1, n2 = map(int, sys.argv[1:3])
least = float(sys.argv[3]) / 100
def load(path):
    out = {}
    for line in open(path):
        count, _, name = line.strip().partition(" ")
        name = re.sub(r" \[[^]]*\]$|\?\?\?:", "", name)
        out[name] = max(out.get(name, 0), int(count))
    return out
a, b = load("a.txt"), load("b.txt")
per = {k: (b.get(k, 0) - a.get(k, 0)) / (n2 - n1) for k in b}
total = per.pop("PROGRAM TOTALS")
print(f"instructions per signed+encrypted 4 KiB message: {total / 1e6:.3f} million")
for name, v in sorted(per.items(), key=lambda kv: -kv[1]):
    if v < total * least:
        break
    if v < total * 0.99:  # not the runtime's frames around everything
        print(f"{v / total * 100:6.1f} %  {v / 1e3:9.1f} k  {name[:120]}")
EOF
