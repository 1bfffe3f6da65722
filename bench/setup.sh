#!/usr/bin/env bash
# Install the established tools that `python -m bench` compares Wisp's stages with (Debian/Ubuntu).
# Idempotent: packages already installed are left alone; re-running is a no-op.
#   source-extractor  (SExtractor: detection / photometry; also writes the LDAC catalogues for SCAMP)
#   swarp             (resampling + coaddition)
#   scamp             (astrometric calibration against a reference catalogue)
#   astrometry.net    (solve-field, build-astrometry-index; no sky index files are installed: the bench
#                      field is simulated, so the Tycho-2 index packages would be of no use)
# The Python peers (ccdproc, reproject) are installed into the project venv by `make setup`/uv;
# this script checks for them and says so if they are missing.
set -euo pipefail

PACKAGES=(source-extractor swarp scamp astrometry.net)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bench/setup.sh: all peers installed (${PACKAGES[*]})"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "bench/setup.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${here}/../.venv/bin/python"
if [ -x "$py" ]; then
  for mod in ccdproc reproject sep; do
    if ! "$py" -c "import ${mod}" 2>/dev/null; then
      echo "bench/setup.sh: python module '${mod}' missing from .venv (install it: .venv/bin/uv pip install --python .venv/bin/python ${mod})"
    fi
  done
fi
for exe in source-extractor SWarp scamp solve-field build-astrometry-index; do
  if command -v "$exe" >/dev/null 2>&1; then echo "  found $exe: $(command -v "$exe")"; else echo "  NOT found: $exe"; fi
done
