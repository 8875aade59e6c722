#!/usr/bin/env bash
# Fetches the NIST PKITS data (x509/PKITS_data of PyPI's cryptography_vectors, checksum from
# PyPI verified) into target/pkits once, and prints its path. Test data only: not in the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/pkits
version=50.0.2
if [ ! -d "$dest/PKITS_data/smime" ]; then
  mkdir -p "$dest"
  python3 - "$version" "$dest" <<'PY'
import hashlib, html, io, os, re, sys, urllib.parse, urllib.request, zipfile
version, dest = sys.argv[1], sys.argv[2]
# The simple index (PEP 503): every registry mirror serves it; the link carries the checksum.
index_url = "https://pypi.org/simple/cryptography-vectors/"
page = urllib.request.urlopen(index_url, timeout=60).read().decode()
wanted = f"cryptography_vectors-{version}-py3-none-any.whl"
link = next(html.unescape(h) for h in re.findall(r'href="([^"]+)"', page) if wanted in h)
url, _, fragment = urllib.parse.urljoin(index_url, link).partition("#sha256=")
data = urllib.request.urlopen(url, timeout=600).read()
if hashlib.sha256(data).hexdigest() != fragment:
    sys.exit("cryptography_vectors: checksum mismatch")
prefix = "cryptography_vectors/x509/PKITS_data/"
with zipfile.ZipFile(io.BytesIO(data)) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, "PKITS_data", name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "wb") as f:
                f.write(z.read(name))
PY
fi
echo "$PWD/$dest/PKITS_data"
