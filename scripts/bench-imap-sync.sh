#!/usr/bin/env bash
# Cold sync benchmark: one `UID FETCH 1:* BODY.PEEK[]` of a realistic folder (as Thunderbird's
# offline sync and mbsync do), straight from Dovecot and through envelopd with an empty cache,
# in one run: MB/s for each, the ratio, and envelopd's peak memory. The folder: N messages,
# 60 % S/MIME (signed by Alice, encrypted to Bob with AES-256-CBC), sizes 70 % 5-50 KB text,
# 25 % 100 KB-2 MB with an attachment, 5 % 5-20 MB (fixed seed: the same folder every run).
# Needs root (Postfix/Dovecot from scripts/mailserver.sh), python3.
#
#   scripts/bench-imap-sync.sh [--quick]        (--quick: 100 messages instead of 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$PATH:/usr/sbin"
V="$(cd "${ENVELOPD_VECTORS:-../shared/vectors}" && pwd)/rfc9216"
# shellcheck source=scripts/bench-common.sh
. "$root/scripts/bench-common.sh"
n=1000
[ "${1:-}" = --quick ] && n=100

# ENVELOPD_BIN: another build to measure (e.g. an older commit's, for a before/after).
if [ -z "${ENVELOPD_BIN:-}" ]; then
  echo "== building envelopd (release)"
  cargo build --quiet --release -p envelopd
fi
E="${ENVELOPD_BIN:-$root/target/release/envelopd}"
bench_imap_lab bench-sync
bench_fill_realistic "$n" 60
# The same messages unencrypted in a folder of their own: what envelopd costs when there is
# nothing to open (reading, checking and passing on the same kind of bytes).
plainbox="$work/provider/mail/smime.example/bob/.Plain/cur"
mkdir -p "$plainbox" "${plainbox%/cur}/new" "${plainbox%/cur}/tmp"
for f in plain/*; do
  i=$((10#${f:6:4}))
  cp "$f" "$plainbox/$((1700000000 + i)).M${i}P2.bench:2,S"
done
chown -R 5000:5000 "${plainbox%/cur}"

listen=$(port)
bench_bob_imap "$listen" "$(port)"
rss_before=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$epid/status")

python3 - "$IMAP_PORT" "$listen" "$n" "$epid" <<'EOF'
import imaplib, os, sys, time
direct, proxy, n, epid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tick = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    """User + system CPU seconds of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def sync(port, folder="INBOX"):
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login("bob@smime.example", "bob-pw")
    m.select(folder, readonly=True)
    e0, c0 = cpu(epid), time.process_time()
    start = time.perf_counter()
    typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
    took = time.perf_counter() - start
    e_cpu, c_cpu = cpu(epid) - e0, time.process_time() - c0
    assert typ == "OK"
    bodies = [d[1] for d in data if isinstance(d, tuple)]
    m.logout()
    assert len(bodies) == n, (len(bodies), n)
    return took, sum(len(b) for b in bodies), bodies, e_cpu, c_cpu

sync(direct)  # Dovecot reads the folder into its page cache once; not part of the comparison
sync(direct, "Plain")
pd_took, pd_bytes, _, _, _ = sync(direct, "Plain")
pp_took, pp_bytes, _, pp_cpu, _ = sync(proxy, "Plain")
d_took, d_bytes, _, _, d_client = sync(direct)
p_took, p_bytes, bodies, p_cpu, p_client = sync(proxy)
shown = sum(1 for b in bodies if b.startswith(b"X-Envelopd: decrypted="))
stored = sync(direct)[2]
smime = [b for b in stored if b"application/pkcs7-mime" in b[:2048]]
smime_mb = sum(len(b) for b in smime) / 1e6

# The machine's floor for the same work, measured now: one RSA-2048 private operation per
# S/MIME message, and AES-256-CBC decryption, SHA-256 and base64 decoding of every S/MIME byte
# (OpenSSL's own rates; base64 by CPython's C decoder), on every core at once.
import binascii, os, re, subprocess
def speed(*args):
    out = subprocess.run(["openssl", "speed", "-seconds", "2", *args], capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    return out
aes = float(speed("-evp", "aes-256-cbc", "-decrypt", "-bytes", "16384").split()[-1].rstrip("k")) / 1e3
sha = float(speed("-evp", "sha256", "-bytes", "16384").split()[-1].rstrip("k")) / 1e3
rsa = float(speed("rsa2048").split()[-2])
text = binascii.b2a_base64(os.urandom(48 << 20), newline=False)
lines = b"\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))
t = time.perf_counter()
for _ in range(5):
    binascii.a2b_base64(lines)
b64 = 5 * len(lines) / 1e6 / (time.perf_counter() - t)
cores = os.cpu_count()
crypto = (len(smime) / rsa + smime_mb * (1 / aes + 1 / sha + 1 / b64)) / cores
print()
print(f"machine rates (one core): RSA-2048 private {rsa:.0f}/s, AES-256-CBC decrypt {aes:.0f} MB/s,"
      f" SHA-256 {sha:.0f} MB/s, base64 decode {b64:.0f} MB/s; {cores} cores")
print(f"floor for {len(smime)} S/MIME messages ({smime_mb:.0f} MB) on all cores: {crypto:.2f} s"
      f" -> {d_bytes / 1e6 / crypto:.0f} MB/s; with the straight transfer's time added:"
      f" {d_bytes / 1e6 / (crypto + d_took):.0f} MB/s")
print(f"one UID FETCH 1:* BODY.PEEK[] of {n} messages ({d_bytes / 1e6:.0f} MB stored):")
print(f"  straight from Dovecot       {d_took:7.2f} s  {d_bytes / 1e6 / d_took:8.1f} MB/s")
print(f"  through envelopd, cold      {p_took:7.2f} s  {p_bytes / 1e6 / p_took:8.1f} MB/s"
      f"   {d_took / p_took:5.2f}x of straight   ({shown} messages decrypted and verified)")
print(f"  envelopd vs the floor: {crypto / p_took:.2f}x (crypto alone),"
      f" {(crypto + d_took) / p_took:.2f}x (crypto + straight transfer)")
print(f"  envelopd's CPU {p_cpu:.2f} s ({p_cpu / (crypto * cores):.2f}x the floor's {crypto * cores:.2f} s"
      f" of crypto on one core); the client's {p_client:.2f} s ({d_client:.2f} s straight)")
print(f"the same {n} messages unencrypted ({pd_bytes / 1e6:.0f} MB), nothing to open:")
print(f"  straight from Dovecot       {pd_took:7.2f} s  {pd_bytes / 1e6 / pd_took:8.1f} MB/s")
print(f"  through envelopd            {pp_took:7.2f} s  {pp_bytes / 1e6 / pp_took:8.1f} MB/s"
      f"   {pd_took / pp_took:5.2f}x of straight, envelopd's CPU {pp_cpu:.2f} s")
largest = max(len(b) for b in stored)
print(f"largest stored message {largest / 2**20:.1f} MiB: memory bound 64 MiB + 2x = {64 + 2 * largest / 2**20:.1f} MiB")
EOF
echo "envelopd RSS: $rss_before MiB at start, peak $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$epid/status")"
