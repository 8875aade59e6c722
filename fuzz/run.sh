#!/usr/bin/env bash
# Runs every fuzz target for a set time (default 60 s each) on the seed corpora and prints one
# report line per target (runs, runs per second, coverage). An input that crashes, hangs or
# exhausts memory is copied to fuzz/regressions/<target>/ (replayed by `cargo test` from then on)
# and the script exits 1.
#
#   fuzz/run.sh [SECONDS]              all targets
#   TARGETS="smtp mime" fuzz/run.sh 600
#   SANITIZER=none fuzz/run.sh 20      no AddressSanitizer (faster build; CI's short run)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP lets the stable
# toolchain build with the flags cargo-fuzz uses.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
[ -d corpus/smtp ] && [ -d corpus/trust ] || ./seed.sh
export RUSTC_BOOTSTRAP=1
targets=${TARGETS:-cms mime decrypt trust imap_server imap_client imap_session smtp pop3_client pop3_server}
san=(--sanitizer "${SANITIZER:-address}")
for t in $targets; do
  [ -f "fuzz_targets/$t.rs" ] || { echo "no fuzz target \"$t\"; the targets are: $(cd fuzz_targets && ls | sed 's/\.rs$//' | tr '\n' ' ')" >&2; exit 2; }
done
echo "== building the fuzz targets (${SANITIZER:-address} sanitizer)"
cargo fuzz build -O "${san[@]}" >/dev/null
failed=0
report=""
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  before=$(ls "artifacts/$t")
  echo "== fuzzing $t for ${secs}s"
  if cargo fuzz run -O "${san[@]}" "$t" "corpus/$t" -- -max_total_time="$secs" \
      -rss_limit_mb=2048 -max_len=65536 -timeout=10 >"$log" 2>&1; then
    line=$(grep -E "^#[0-9]+.*DONE" "$log" | tail -1)
    runs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$line")
    rate=$(sed -E 's/.*exec\/s: ([0-9]+).*/\1/' <<<"$line")
    cov=$(sed -E 's/.*cov: ([0-9]+).*/\1/' <<<"$line")
    report+=$(printf '%-12s %10s runs  %6s/s  cov %6s  no crash\n' "$t" "$runs" "$rate" "$cov")$'\n'
  else
    failed=1
    echo "!! $t found a problem:"
    # Not fatal when nothing matches (set -e with pipefail would end the whole run here):
    # then the log's end says what happened.
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -20 || tail -20 "$log"
    mkdir -p "regressions/$t"
    for f in $(comm -13 <(printf '%s\n' "$before" | sort) <(ls "artifacts/$t" | sort)); do
      cp "artifacts/$t/$f" "regressions/$t/"
      echo "   kept as fuzz/regressions/$t/$f"
    done
    report+=$(printf '%-12s FAILED (see above)\n' "$t")$'\n'
  fi
  rm -f "$log"
done
echo "== fuzz report (${secs}s per target)"
printf '%s' "$report"
exit $failed
