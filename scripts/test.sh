#!/usr/bin/env bash
# Runs every test: unit and property tests, the RFC vector tests, the interoperability matrix
# against openssl/gpgsm/NSS (printed), the fuzz-corpus replay, and the SMTP proxy end to end
# (swaks, curl, Python smtplib, msmtp -> envelopd -> Postfix/Dovecot started by the tests, and
# Postfix's smtp-sink for faults). Needs the Debian packages .ci/run installs; the tests that
# start Postfix and Dovecot need root.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PATH:/usr/sbin"
for tool in openssl gpgsm cmsutil certutil pk12util smtp-sink postfix dovecot swaks curl msmtp python3 mbsync fetchmail mpop getmail mutt s-nail softhsm2-util pkcs11-tool slapd slapadd chromium debootstrap; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run .ci/run once, or apt-get install openssl gpgsm libnss3-tools postfix dovecot-imapd dovecot-pop3d swaks curl msmtp python3 isync fetchmail mpop getmail6 mutt s-nail softhsm2 opensc slapd ldap-utils chromium debootstrap" >&2; exit 1; }
done
cargo deb --version >/dev/null 2>&1 || { echo "missing cargo-deb: cargo install cargo-deb --version 3.6.2 --locked" >&2; exit 1; }
python3 -c "import prometheus_client" 2>/dev/null || { echo "missing the Python package prometheus-client: python3 -m pip install prometheus-client==0.21.1" >&2; exit 1; }
if [ ! -d "${ENVELOPD_VECTORS:-../shared/vectors}" ]; then
  echo "test vectors not found: put shared/ beside the checkout or set ENVELOPD_VECTORS" >&2; exit 1
fi
export ENVELOPD_VECTORS="$(cd "${ENVELOPD_VECTORS:-../shared/vectors}" && pwd)"

echo "== NIST PKITS data (cryptography_vectors from PyPI)"
if pkits=$(scripts/fetch-pkits.sh); then
  export ENVELOPD_PKITS="$pkits"
else
  # CI reaches PyPI: a missing PKITS run is a failure, not a silent skip.
  echo "could not fetch the PKITS data (PyPI's cryptography_vectors); the path-validation tests need it" >&2
  exit 1
fi
echo "== build"
cargo build --workspace --all-targets --locked
echo "== tests"
cargo test --workspace --locked -- --skip interop_matrix
echo "== interoperability matrix"
# --workspace keeps feature unification identical to the build above (no second build).
cargo test --workspace --locked --test interop -- --nocapture
if [ "${ENVELOPD_FUZZ_SECS:-20}" != 0 ] && cargo fuzz --version >/dev/null 2>&1; then
  echo "== short coverage-guided fuzz run (${ENVELOPD_FUZZ_SECS:-20} s per target; fuzz/run.sh for longer)"
  ENVELOPD_BIN="$PWD/target/debug/envelopd" SANITIZER=${ENVELOPD_FUZZ_SANITIZER:-none} \
    fuzz/run.sh "${ENVELOPD_FUZZ_SECS:-20}"
else
  echo "NOTE: cargo-fuzz not installed (or ENVELOPD_FUZZ_SECS=0): the coverage-guided fuzz run is skipped;" \
    "the fuzz entry points still ran on seeds and mutations in the tests above" >&2
fi
echo "== the demo (README's first command), non-interactively"
ENVELOPD_BIN="$PWD/target/debug/envelopd" scripts/demo.sh --once
