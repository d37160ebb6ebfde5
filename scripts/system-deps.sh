#!/usr/bin/env bash
# System packages the test suite drives for real: a JDK (the Java client), Debian's headless
# Chromium (the UI tests) and a CJK font (the OCR fixtures render Chinese text with it).
# `make test` runs this first; it installs what is missing through apt (Debian's registry, as
# root or with sudo) and fails with the command to run when it cannot.
set -euo pipefail
FONT=/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc
need=()
command -v java >/dev/null 2>&1 || need+=(default-jdk-headless)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -f "$FONT" ] || need+=(fonts-wqy-zenhei)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || command -v sudo >/dev/null 2>&1; }; then
  echo "installing system packages for the tests: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -f "$FONT" ] || missing+=(fonts-wqy-zenhei)
if [ ${#missing[@]} -gt 0 ]; then
  echo "the tests need: ${missing[*]} (apt-get install -y ${missing[*]})" >&2
  exit 1
fi
