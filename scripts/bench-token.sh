#!/usr/bin/env bash
# Token benchmark, in one run: signed + encrypted 4 KiB messages through `envelopd run` with
# Alice's RSA-2048 signing key in memory (her PKCS#12 file) and with the same key in a SoftHSM2
# token (PKCS#11), the same smtp-source load to smtp-sink; messages/s, envelopd's CPU per
# message, the ratio, and peak RSS. Needs postfix (smtp-source, smtp-sink), softhsm2, openssl.
#
#   scripts/bench-token.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$PATH:/usr/sbin"
V="$(cd "${ENVELOPD_VECTORS:-../shared/vectors}" && pwd)/rfc9216"
n=2000 sessions=8
[ "${1:-}" = --quick ] && n=300
module=/usr/lib/softhsm/libsofthsm2.so

echo "== building envelopd (release)"
cargo build --quiet --release -p envelopd
E="$root/target/release/envelopd"
# shellcheck source=scripts/bench-common.sh
. "$root/scripts/bench-common.sh"
bench_workdir

# The token: Alice's signing key imported, the PIN in a file.
mkdir tokens
echo "directories.tokendir = $work/tokens" >softhsm2.conf
export SOFTHSM2_CONF=$work/softhsm2.conf
softhsm2-util --init-token --free --label Bench --pin 1234 --so-pin 5678 >/dev/null
softhsm2-util --import "$V/alice.sign.key" --token Bench --label alice --id 01 --pin 1234 >/dev/null
echo 1234 >keys/pin && chmod 600 keys/pin
cp "$V/alice.sign.crt" keys/alice-sign.pem

sink_port=$(port)
user=()
[ "$(id -u)" = 0 ] && user=(-u nobody)
smtp-sink "${user[@]}" -m 512 "127.0.0.1:$sink_port" 1024 </dev/null >/dev/null 2>&1 &
pids+=($!)
wait_port "$sink_port"

start_envelopd() { # name listen-port [token]
  bench_proxy_toml "$2" "$sink_port"
  if [ -n "${3:-}" ]; then
    python3 - <<'EOF'
import re
t = open("proxy.toml").read()
t = re.sub(r'pkcs12 = "keys/alice.p12"\npassword_file = "keys/pw"\n',
           'key = "pkcs11:token=Bench;object=alice"\ncert = "keys/alice-sign.pem"\n'
           'module = "/usr/lib/softhsm/libsofthsm2.so"\npin_file = "keys/pin"\n', t)
open("proxy.toml", "w").write(t)
EOF
  fi
  cp proxy.toml "proxy-$1.toml"
  RUST_LOG=warn "$E" run --config "proxy-$1.toml" 2>"envelopd-$1.log" &
  pids+=($!)
  wait_port "$2"
  echo $! >"pid-$1"
}
mem_port=$(port) tok_port=$(port)
start_envelopd memory "$mem_port"
start_envelopd token "$tok_port" token
mkmsg small.eml 4096

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
run() { # name port -> "msgs/s cpu-ms-per-msg"
  local pid t0 start end
  pid=$(cat "pid-$1")
  t0=$(cpu_ticks "$pid")
  start=$(date +%s.%N)
  smtp-source -s "$sessions" -m "$n" -d -F small.eml -f alice@smime.example -t bob@smime.example "127.0.0.1:$2"
  end=$(date +%s.%N)
  python3 -c "print(f'{$n/($end-$start):.1f} {($(cpu_ticks "$pid") - $t0) * 1000 / $tck / $n:.3f}')"
}
echo "== $n signed + encrypted 4 KiB messages, $sessions sessions, alternating rounds"
for round in 1 2; do
  read -r m_rate m_cpu < <(run memory "$mem_port")
  read -r t_rate t_cpu < <(run token "$tok_port")
  echo "   round $round: key in memory $m_rate msg/s ($m_cpu ms CPU each); key in SoftHSM $t_rate msg/s ($t_cpu ms CPU each)"
done
python3 -c "print(f'key in the token: {$t_rate/$m_rate:.2f}x the messages/s, {$t_cpu/$m_cpu:.2f}x the CPU per message of the key in memory (last round)')"
for name in memory token; do
  echo "envelopd ($name) peak RSS: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$(cat "pid-$name")/status")"
done
grep -h "ERROR" envelopd-*.log | head -3 || true
