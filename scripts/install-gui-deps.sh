#!/usr/bin/env bash
# Install (apt-get, as root) the system packages napari's GUI tests need: Xvfb for a virtual
# display and the X/GL libraries Qt loads. Used by scripts/test.sh and .ci/run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 \
  libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libxkbcommon-x11-0 libxcb-cursor0 \
  libxcb-image0 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 \
  libfontconfig1 libdbus-1-3 >/dev/null
