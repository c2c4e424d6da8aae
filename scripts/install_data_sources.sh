#!/usr/bin/env sh
# Optional sources of well-lit photos for scripts/make_default_dataset.py (Debian/Ubuntu).
# The dataset script works without them (it skips what is missing and says so).
#   libjxl-testdata: CC0 photos (wesaturate.com) and a BSD-3-Clause photo (JPEG XL authors)
#   opencv-doc:      OpenCV sample photos (Apache-2.0 per Debian's copyright file)
#   mate-backgrounds, plasma-workspace-wallpapers: nature photos (GPL-2+, LGPL-3; per file)
# scikit-learn's two sample photos (CC BY 2.0) come with:  pip install "rave-enhance[data]"
set -eu
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    libjxl-testdata opencv-doc mate-backgrounds plasma-workspace-wallpapers
