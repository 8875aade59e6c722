#!/usr/bin/env bash
# SMTP throughput benchmark, all baselines measured in the same run:
#   * Postfix's smtp-source sending straight to smtp-sink (the client and sink alone),
#   * the same client through `envelopd run` (every message signed with RSA-2048 and
#     encrypted to the recipient and the sender's Sent key), 4 KiB and 1 MiB messages,
#   * the machine's raw RSA-2048 signing rate (`openssl speed`, one core and all cores),
#   * the same 4 KiB message relayed as it is (no key, no certificate: what relaying costs),
#   * three paired rounds, each 4 KiB run between two `openssl speed` samples,
# and envelopd's peak memory. Needs postfix (smtp-source, smtp-sink) and openssl.
#
#   scripts/bench-smtp.sh [--quick] [--sweep FILE]
# --sweep also measures messages/s at sizes from 1 KiB to 4 MiB (direct and through envelopd)
# and writes them to FILE as "bytes direct envelopd" lines, for scripts/bench's plot.
# On a machine with 4 or more CPUs (or with ENVELOPD_BENCH_SPLIT=1), envelopd is pinned to the
# first half of the CPUs and smtp-source and smtp-sink to the other half, and the RSA rates are
# those of envelopd's CPUs: the load generator and sink then take nothing from envelopd, as in a
# deployment, where the clients and the provider are other machines. ENVELOPD_BENCH_SPLIT=0: no
# pinning.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$PATH:/usr/sbin"
V="$(cd "${ENVELOPD_VECTORS:-../shared/vectors}" && pwd)/rfc9216"
small=4000 large=120 sessions=8
sweep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) small=400 large=16 ;;
    --sweep) sweep=$(realpath -m "$2"); shift ;;
    *) echo "usage: [ENVELOPD_BIN=build] $0 [--quick] [--sweep FILE]" >&2; exit 2 ;;
  esac
  shift
done

ncpu=$(nproc)
split=${ENVELOPD_BENCH_SPLIT:-auto}
proxy=() rig=()
cores=$ncpu
if [ "$ncpu" -ge 2 ] && { [ "$split" = 1 ] || { [ "$split" = auto ] && [ "$ncpu" -ge 4 ]; }; }; then
  cores=$((ncpu / 2)) split=1
  proxy=(taskset -c "0-$((cores - 1))") rig=(taskset -c "$cores-$((ncpu - 1))")
else
  split=0
fi

echo "== building envelopd (release)"
# ENVELOPD_BIN: another build to measure (e.g. the previous commit's, for a before/after).
if [ -z "${ENVELOPD_BIN:-}" ]; then
  cargo build --quiet --release -p envelopd
fi
E="${ENVELOPD_BIN:-$root/target/release/envelopd}"

# shellcheck source=scripts/bench-common.sh
. "$root/scripts/bench-common.sh"
bench_workdir

sink_port=$(port)
listen=$(port)
user=()
[ "$(id -u)" = 0 ] && user=(-u nobody)
"${rig[@]}" smtp-sink "${user[@]}" -m 512 "127.0.0.1:$sink_port" 1024 </dev/null >/dev/null 2>&1 &
sink_pid=$!
pids+=($sink_pid)
bench_proxy_toml "$listen" "$sink_port"
RUST_LOG=info "${proxy[@]}" "$E" run --config proxy.toml 2>envelopd.log &
epid=$!
pids+=($epid)
wait_port "$sink_port"
wait_port "$listen"

mkmsg small.eml 4096
mkmsg large.eml 1048576
sed 's/alice@smime.example/carol@plain.example/; s/bob@smime.example/dave@plain.example/' small.eml >plain.eml

# Messages per second for N messages of FILE to PORT over $sessions parallel sessions.
rate() { # port file count [extra smtp-source options]; SOURCE_TIME=FILE: smtp-source's CPU seconds
  local start end timing=()
  [ -n "${SOURCE_TIME:-}" ] && timing=(/usr/bin/time -o "$SOURCE_TIME" -f "%U %S")
  start=$(date +%s.%N)
  "${timing[@]}" "${rig[@]}" smtp-source -s "$sessions" -m "$3" "${@:4}" -F "$2" -f "${FROM:-alice@smime.example}" -t "${TO:-bob@smime.example}" "127.0.0.1:$1"
  end=$(date +%s.%N)
  python3 -c "print(f'{$3/($end-$start):.1f}')"
}

echo "== openssl speed rsa2048 (the machine's raw signing rate)"
# Measured at the start and again at the end of the run, and the higher rate of each kept: on a
# shared virtual machine one 3-second sample can be 20 % low, which would flatter envelopd.
# Each sample takes the better of OpenSSL's two RSA code paths (MULX/ADX, its default where the
# CPU has them, and AVX2): the machine's raw rate is what its fastest code reaches, while
# envelopd runs aws-lc's own choice, so the floor never flatters envelopd. The default path's
# own rate goes to speed-default.txt, for the line that quotes plain `openssl speed`.
speed_path() {
  local mask=()
  [ -n "$1" ] && mask=("OPENSSL_ia32cap=$1")
  env -u OPENSSL_ia32cap "${mask[@]}" "${proxy[@]}" openssl speed "${@:2}" -seconds 3 rsa2048 2>/dev/null | awk '/^rsa 2048/ {print $6}'
}
speed() {
  local d a
  d=$(speed_path "" "$@") a=$(speed_path ":~0x80000" "$@")
  echo "$* $d $a" >>"$work/speed-default.txt"
  python3 -c "print(max($d, $a))"
}
[ "$split" = 1 ] && echo "   (on envelopd's CPUs 0-$((cores - 1)) of $ncpu; smtp-source and smtp-sink run on the others)"
one=$(speed) all=$(speed -multi "$cores")
echo "   one core: $one sign/s; $cores cores: $all sign/s (the better of OpenSSL's two RSA code paths)"

echo "== 4 KiB messages ($small, $sessions sessions in parallel, one message per session)"
direct_s=$(rate "$sink_port" small.eml "$small")
via_s=$(rate "$listen" small.eml "$small")
echo "== 4 KiB messages, sessions kept open (-d)"
direct_sd=$(rate "$sink_port" small.eml "$small" -d)
# envelopd's own CPU time (user + system, from /proc) over this run: what one message costs it,
# whatever the load generator and the sink on the same cores take.
# The load generator's and the sink's CPU too: on a shared machine they bound what any proxy
# can reach.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# envelopd's CPU milliseconds per message since it had used TICKS0 ticks, over COUNT messages.
envelopd_ms() { python3 -c "print(f'{($(cpu_ticks "$epid") - $1) * 1000 / $tck / $2:.3f}')"; }
ticks0=$(cpu_ticks "$epid") sink0=$(cpu_ticks "$sink_pid")
via_sd=$(SOURCE_TIME="$work/source.time" rate "$listen" small.eml "$small" -d)
tck=$(getconf CLK_TCK)
cpu_ms=$(envelopd_ms "$ticks0" "$small")
others_ms=$(python3 -c "
u, s = map(float, open('$work/source.time').read().split()[-2:])
print(f'{((u + s) + ($(cpu_ticks "$sink_pid") - $sink0) / $tck) * 1000 / $small:.3f}')")
# What relaying alone costs envelopd (the same 4 KiB message from a sender without a key to a
# recipient without a certificate, sent as it is): the SMTP work on both sockets, parsing, policy,
# logging, without any cryptography.
ticks0=$(cpu_ticks "$epid")
relay_sd=$(FROM=carol@plain.example TO=dave@plain.example rate "$listen" plain.eml "$small" -d)
relay_ms=$(envelopd_ms "$ticks0" "$small")
echo "== 1 MiB messages ($large)"
direct_l=$(rate "$sink_port" large.eml "$large")
via_l=$(rate "$listen" large.eml "$large")
sweep_count=0
if [ -n "$sweep" ]; then
  echo "== throughput by message size (sessions kept open)"
  : >"$sweep"
  for bytes in 1024 4096 16384 65536 262144 1048576 4194304; do
    mkmsg "sweep-$bytes.eml" "$bytes"
    # About 3 s of work per point on this machine, at least 16 messages.
    n=$(python3 -c "print(max(16, min(3000, int(2e9 / ($bytes + 250000)))))")
    d=$(rate "$sink_port" "sweep-$bytes.eml" "$n" -d)
    v=$(rate "$listen" "sweep-$bytes.eml" "$n" -d)
    echo "   $bytes bytes: direct $d msg/s, through envelopd $v msg/s ($n messages)"
    echo "$bytes $d $v" >>"$sweep"
    sweep_count=$((sweep_count + n))
  done
fi
# Paired rounds: the machine's all-core signing rate drifts during a run (this shared VM's
# samples differ by up to a quarter), so envelopd's CPU per message is also set against
# `openssl speed` samples taken right before and right after each of several short runs (the
# higher of the two), and the median round is reported next to the single figures above.
# Each round also relays the plain message right after the signed ones, so the sending target
# (CPU per signed+encrypted message against relaying plus one signature) is judged within one
# round: the single figures above come from runs a minute apart, and this VM's CPU cost per
# message drifts by up to a fifth between them.
# At least 1,500 signed messages per round and four times as many relayed ones: /proc counts CPU
# in 10 ms ticks, and at ~0.12 ms per relayed message 1,500 of them are only 18 ticks, so one
# tick of rounding moved a round's ratio by 2-3 % (400 relayed messages were ten ticks).
rounds=${ENVELOPD_BENCH_ROUNDS:-3} per_round=$((small > 1500 ? small : 1500))
relay_round=$((4 * per_round))
echo "== paired rounds: openssl speed -multi $cores around each of $rounds runs of $per_round signed+encrypted and $relay_round relayed 4 KiB messages"
paired="" before=$(speed -multi "$cores")
for r in $(seq "$rounds"); do
  ticks0=$(cpu_ticks "$epid")
  v=$(rate "$listen" small.eml "$per_round" -d)
  ms=$(envelopd_ms "$ticks0" "$per_round")
  ticks0=$(cpu_ticks "$epid")
  FROM=carol@plain.example TO=dave@plain.example rate "$listen" plain.eml "$relay_round" -d >/dev/null
  rms=$(envelopd_ms "$ticks0" "$relay_round")
  after=$(speed -multi "$cores")
  echo "   round $r: $before sign/s, envelopd $v msg/s at $ms ms CPU per message (relaying: $rms ms), $after sign/s"
  paired="$paired $(python3 -c "print(f'{$v}/{max($before, $after)}/{$ms}/{$rms}')")"
  before=$after
done
rss=$(awk '/VmHWM/ {print $2}' "/proc/$epid/status")
echo "== openssl speed rsa2048 again"
one2=$(speed) all2=$(speed -multi "$cores")
echo "   one core: $one2 sign/s; $cores cores: $all2 sign/s"
one=$(python3 -c "print(max($one, $one2))") all=$(python3 -c "print(max($all, $all2))")
# Every message through envelopd must have been signed, encrypted and accepted (its audit line, at
# the default log level, so the benchmark also pays for logging as a real deployment does).
through=$((2 * small + large + sweep_count + rounds * per_round))
done_ok=$(grep -c 'decision=encrypted cipher=[a-z0-9-]* signed_as=alice@smime.example copies=1 reply=250' envelopd.log || true)
if [ "$done_ok" != "$through" ]; then
  echo "only $done_ok of $through messages were signed and encrypted; see the log:" >&2
  tail -5 envelopd.log >&2
  exit 1
fi
echo "== all $through messages through envelopd were signed and encrypted"

relayed=$(grep -c 'decision=plaintext cipher=- signed_as=- copies=1 reply=250' envelopd.log || true)
if [ "$relayed" != $((small + rounds * relay_round)) ]; then
  echo "only $relayed of $((small + rounds * relay_round)) relaying-only messages went out as they were; see the log" >&2
  exit 1
fi

python3 - "$one" "$all" "$direct_s" "$via_s" "$direct_sd" "$via_sd" "$direct_l" "$via_l" "$rss" "$cores" "$cpu_ms" "$others_ms" "$relay_sd" "$relay_ms" "$split" "$paired" "$work/speed-default.txt" <<'EOF'
import statistics, sys
one, allc, ds, vs, dsd, vsd, dl, vl, rss, cores, cpu_ms, others_ms, rsd, relay_ms, split = map(float, sys.argv[1:16])
paired = [tuple(map(float, r.split("/"))) for r in sys.argv[16].split()]
# Every openssl speed sample, per code path: "[-multi N] default avx2".
paths = {"one": ([], []), "all": ([], [])}
for line in open(sys.argv[17]):
    w = line.split()
    d, a = float(w[-2]), float(w[-1])
    paths["all" if "-multi" in w else "one"][0].append(d)
    paths["all" if "-multi" in w else "one"][1].append(a)
print()
print(f"{'':40}{'msg/s':>10}{'vs direct':>12}{'vs RSA sign 1 core':>20}{'all cores':>11}")
rows = [("4 KiB direct to smtp-sink", ds, None), ("4 KiB through envelopd", vs, ds),
        ("4 KiB direct, sessions reused", dsd, None), ("4 KiB through envelopd, sessions reused", vsd, dsd),
        ("  same, relayed as is (no key, no cert)", rsd, dsd),
        ("1 MiB direct to smtp-sink", dl, None), ("1 MiB through envelopd", vl, dl)]
for name, v, base in rows:
    r = f"{v/base:.2f}x" if base else ""
    s1 = f"{v/one*100:.0f} %" if base else ""
    s = f"{v/allc*100:.0f} %" if base else ""
    print(f"{name:40}{v:>10.1f}{r:>12}{s1:>20}{s:>11}")
print(f"raw RSA-2048 sign: {one:.0f}/s on one core, {allc:.0f}/s on {cores:.0f} cores (openssl speed, the higher of two "
      f"samples, each the better of OpenSSL's two code paths)")
(d1, a1), (dn, an) = paths["one"], paths["all"]
print(f"  OpenSSL's code paths, best samples: MULX/ADX (its own default on this CPU) {max(d1):.0f}/s on one core, "
      f"{max(dn):.0f}/s on {cores:.0f}; AVX2 {max(a1):.0f}/s and {max(an):.0f}/s. The ratios here are against the "
      f"better path, envelopd runs the one it measured faster (its log line above)")
capacity = cores * 1000 / cpu_ms
print(f"envelopd's CPU per 4 KiB message (sessions reused): {cpu_ms:.3f} ms, of which one RSA signature "
      f"is {1000 / one:.3f} ms ({1000 / one / cpu_ms * 100:.0f} %); {cores:.0f} cores given to envelopd alone would "
      f"carry {capacity:.0f} msg/s = {capacity / allc * 100:.0f} % of the {cores:.0f}-core RSA-2048 sign rate")
if split:
    print(f"envelopd on {cores:.0f} CPU(s) of its own, smtp-source and smtp-sink on the others: {vsd:.0f} msg/s "
          f"= {vsd / allc * 100:.0f} % of those CPUs' RSA-2048 sign rate (4 KiB, sessions reused)")
else:
    bound = cores * 1000 / (1000 / one + others_ms)
    print(f"smtp-source and smtp-sink on the same cores took {others_ms:.3f} ms CPU per message: a proxy doing "
          f"nothing but the one signature could carry at most {bound:.0f} msg/s = {bound / allc * 100:.0f} % of the "
          f"{cores:.0f}-core rate on this machine")
# Where envelopd's CPU per message goes: relaying (measured above without cryptography), one RSA
# signature at the rate openssl reaches with every core signing (what the proxy gets under load),
# and the rest (S/MIME structure, the two RSA key transports, AES, SHA-256, larger output).
sign_all = cores * 1000 / allc
rest = cpu_ms - relay_ms - sign_all
print(f"envelopd's CPU per message split: relaying {relay_ms:.3f} ms + one RSA-2048 signature "
      f"{sign_all:.3f} ms (with all {cores:.0f} cores signing) + everything else {rest:.3f} ms = {cpu_ms:.3f} ms")
bound2 = cores * 1000 / (others_ms + relay_ms + sign_all)
if not split:
    print(f"a proxy that relayed as cheaply as envelopd and added only the signature, with smtp-source and "
          f"smtp-sink on the same cores: at most {bound2:.0f} msg/s = {bound2 / allc * 100:.0f} % of the "
          f"{cores:.0f}-core rate; 70 % ({0.7 * allc:.0f} msg/s) leaves {cores * 1000 / (0.7 * allc):.3f} ms of "
          f"CPU per message for all three")
measured = [v / rate * 100 for v, rate, ms, _ in paired]
capacities = [cores * 1000 / ms / rate * 100 for v, rate, ms, _ in paired]
print(f"paired rounds (each against the higher of the openssl speed samples right before and after it): "
      f"envelopd reached {', '.join(f'{m:.0f}' for m in measured)} % of the {cores:.0f}-core rate "
      f"(median {statistics.median(measured):.0f} %); {cores:.0f} cores given to envelopd alone: "
      f"{', '.join(f'{c:.0f}' for c in capacities)} % (median {statistics.median(capacities):.0f} %)")
# The issue's wording is "the raw RSA-sign rate (openssl speed)": plain `openssl speed` runs the
# MULX/ADX code here. Against that slower baseline the same rounds read higher; shown, labelled,
# never used for the figures above.
plain = [max(dn)] * len(paired)
print(f"the same rounds against plain `openssl speed` (MULX/ADX code, best {cores:.0f}-core sample {max(dn):.0f}/s): "
      f"median {statistics.median(v / p * 100 for (v, _, _, _), p in zip(paired, plain)):.0f} % measured, "
      f"{statistics.median(cores * 1000 / ms / p * 100 for (_, _, ms, _), p in zip(paired, plain)):.0f} % as capacity "
      f"(not the figure to judge by: envelopd may run the faster AVX2 code)")
# The sending target: envelopd's CPU per signed+encrypted message against relaying the same
# message as is plus one RSA signature (at the all-core rate sampled around the round).
ratios = [ms / (rms + cores * 1000 / rate) for _, rate, ms, rms in paired]
print(f"sending, per round: envelopd's CPU per signed+encrypted message / (relaying + one signature) = "
      f"{', '.join(f'{x:.2f}' for x in ratios)}x (median {statistics.median(ratios):.2f}x; "
      f"single runs above: {cpu_ms / (relay_ms + sign_all):.2f}x)")
print(f"envelopd peak RSS: {rss/1024:.1f} MiB (8 sessions in parallel, all runs above)")
EOF
