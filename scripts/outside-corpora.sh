#!/usr/bin/env bash
# The outside evaluation corpora (documents nobody here wrote), fetched from Debian's package
# registry at run time, never committed: `scripts/outside-corpora.sh [DEST]` (default
# workspace/outside) leaves DEST/<name>/docs/ (the documents to ingest) and DEST/<name>/COPYRIGHT
# (the package's copyright file, outside docs/ so it is not ingested). The questions about them
# are data/outside/<name>/qa.jsonl (see data/outside/README.md).
#
# Each package is pinned (version and SHA-256). It is downloaded with `apt-get download` (no root
# needed; needs package lists that hold the pinned version, i.e. Debian 12 "bookworm"), else
# straight from the Debian archive's pool with curl or wget; the checksum is checked either way.
# Running it again skips a corpus that is already complete.
set -euo pipefail

DEST=${1:-workspace/outside}
MIRROR=${DEBIAN_MIRROR:-https://deb.debian.org/debian}

# name|package|version|sha256|pool path|directory inside the package|documents (space-separated)
CORPORA=(
  "debian-faq|debian-faq|11.1|427426e0cfa6888622fc1d72631071cb4b5a1f86ccde722e7820bcef284de5d0|pool/main/d/debian-faq/debian-faq_11.1_all.deb|usr/share/doc/debian/FAQ|basic-defs.en.html getting-debian.en.html choosing.en.html software.en.html pkg-basics.en.html pkgtools.en.html uptodate.en.html kernel.en.html support.en.html ftparchives.en.html nextrelease.en.html faqinfo.en.html"
  "fhs|debian-policy|4.6.2.0|ef9d01b625c3b87c3a845c2cd1b66f1a16e9240b2b9e5bee53472a00e8457a39|pool/main/d/debian-policy/debian-policy_4.6.2.0_all.deb|usr/share/doc/debian-policy/fhs|fhs-3.0.pdf"
  "debian-reference-zh|debian-reference-zh-cn|2.100|6d2d8d9a646397e28b04cdff23d2e4374101ebf9be348e35961af62c8a2d0977|pool/main/d/debian-reference/debian-reference-zh-cn_2.100_all.deb|usr/share/debian-reference|pr01.zh-cn.html ch03.zh-cn.html ch04.zh-cn.html ch05.zh-cn.html ch07.zh-cn.html ch08.zh-cn.html"
)

die() { echo "outside-corpora: $*" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

licence() {
  case "$1" in
    debian-faq) echo "Copyright (C) 1996-2003 Software in the Public Interest; verbatim and modified copies permitted with the notice kept (see COPYRIGHT). Upstream: https://salsa.debian.org/ddp-team/debian-faq" ;;
    fhs) echo "Filesystem Hierarchy Standard 3.0, Copyright 1994-2004 Daniel Quinlan, 2001-2004 Paul 'Rusty' Russell, 2003-2004 Christopher Yeoh, 2015 The Linux Foundation; verbatim copies permitted with the permission notice (see COPYRIGHT). Upstream: https://refspecs.linuxfoundation.org/FHS_3.0/" ;;
    debian-reference-zh) echo "Copyright 2007-2013 Osamu Aoki and translators; GPL-2+ (see COPYRIGHT). Upstream: https://salsa.debian.org/debian/debian-reference" ;;
  esac
}

# download PACKAGE VERSION SHA256 POOLPATH DIR: leave the checked .deb in DIR, print its path.
download() {
  local pkg=$1 ver=$2 sum=$3 pool=$4 dir=$5 deb
  deb="$dir/${pkg}_${ver}_all.deb"
  if command -v apt-get >/dev/null 2>&1 \
      && (cd "$dir" && apt-get download -q "$pkg=$ver") >"$dir/apt.log" 2>&1 && [ -f "$deb" ]; then
    :
  elif command -v curl >/dev/null 2>&1 && curl -fsSL --retry 2 -o "$deb" "$MIRROR/$pool"; then
    :
  elif command -v wget >/dev/null 2>&1 && wget -q -O "$deb" "$MIRROR/$pool"; then
    :
  else
    [ -f "$dir/apt.log" ] && sed 's/^/  apt-get: /' "$dir/apt.log" >&2
    die "could not download $pkg $ver: 'apt-get download $pkg=$ver' failed (on Debian 12 run" \
        "'apt-get update' first) and so did $MIRROR/$pool (no network, or set DEBIAN_MIRROR)"
  fi
  echo "$sum  $deb" | sha256sum -c --quiet - >/dev/null 2>&1 \
    || die "$deb does not match the pinned SHA-256 $sum; refusing to use it"
  echo "$deb"
}

# unpack DEB DIR: the package's files under DIR (dpkg-deb, else ar + tar).
unpack() {
  if command -v dpkg-deb >/dev/null 2>&1; then
    dpkg-deb -x "$1" "$2"
  else
    command -v ar >/dev/null 2>&1 || die "need dpkg-deb or ar (binutils) to unpack $1"
    local member
    member=$(ar t "$1" | grep '^data\.tar') || die "$1 has no data.tar member"
    ar p "$1" "$member" >"$2.$member"
    tar -xf "$2.$member" -C "$2"  # GNU tar detects the compression of a file
  fi
}

# complete OUT DOCS: every document is in OUT/docs.
complete() {
  local doc
  for doc in $2; do [ -s "$1/docs/$doc" ] || return 1; done
}

fetch_corpus() {
  local name=$1 pkg=$2 ver=$3 sum=$4 pool=$5 inner=$6 docs=$7 out="$DEST/$1" stamp
  stamp="$pkg $ver $sum $docs"
  if [ -f "$out/.source" ] && [ "$(cat "$out/.source")" = "$stamp" ] && complete "$out" "$docs"; then
    echo "$name: already in $out/docs ($pkg $ver), skipped"
    return
  fi
  local tmp="$WORK/$name" deb
  mkdir -p "$tmp"
  deb=$(download "$pkg" "$ver" "$sum" "$pool" "$tmp")
  mkdir -p "$tmp/x"
  unpack "$deb" "$tmp/x"
  rm -rf "$out" && mkdir -p "$out/docs"
  local doc src
  for doc in $docs; do
    src="$tmp/x/$inner/$doc"
    if [ -f "$src" ]; then
      cp "$src" "$out/docs/$doc"
    elif [ -f "$src.gz" ]; then
      gunzip -c "$src.gz" >"$out/docs/$doc"
    else
      die "$pkg $ver has no $inner/$doc"
    fi
  done
  cp "$tmp/x/usr/share/doc/$pkg/copyright" "$out/COPYRIGHT"
  echo "$stamp" >"$out/.source"
  echo "$name: $(echo "$docs" | wc -w) documents from Debian package $pkg $ver" \
       "($MIRROR/$pool) in $out/docs"
  echo "  licence: $(licence "$name")"
}

for spec in "${CORPORA[@]}"; do
  IFS='|' read -r name pkg ver sum pool inner docs <<<"$spec"
  fetch_corpus "$name" "$pkg" "$ver" "$sum" "$pool" "$inner" "$docs"
done
