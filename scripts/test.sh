#!/usr/bin/env bash
# Runs every test: unit and property tests, the RFC vector tests, the interoperability matrix
# against openssl/gpgsm/NSS (printed), and a short fuzz-corpus replay. Needs openssl, gpgsm and
# libnss3-tools installed (.ci/run installs them on Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in openssl gpgsm cmsutil certutil pk12util; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install openssl gpgsm libnss3-tools" >&2; exit 1; }
done
if [ ! -d "${ENVELOPD_VECTORS:-../shared/vectors}" ]; then
  echo "test vectors not found: put shared/ beside the checkout or set ENVELOPD_VECTORS" >&2; exit 1
fi
export ENVELOPD_VECTORS="$(cd "${ENVELOPD_VECTORS:-../shared/vectors}" && pwd)"

echo "== build"
cargo build --workspace --all-targets --locked
echo "== tests"
cargo test --workspace --locked -- --skip interop_matrix
echo "== interoperability matrix"
# --workspace keeps feature unification identical to the build above (no second build).
cargo test --workspace --locked --test interop -- --nocapture
