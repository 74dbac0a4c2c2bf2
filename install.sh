#!/usr/bin/env sh
# Install the autotriage release binary for this machine, checking its SHA-256 before
# anything is written to the destination.
#   sh install.sh [--version latest|X.Y.Z] [--to DIR]
# AUTOTRIAGE_DOWNLOAD_URL overrides where releases are read from (a mirror):
# FILES are read from $AUTOTRIAGE_DOWNLOAD_URL/<tag>/, tag `latest` or `vX.Y.Z`.
set -eu
version=latest
to="${HOME}/.local/bin"
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --to) to="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) target=x86_64-unknown-linux-gnu ;;
  Darwin-arm64) target=aarch64-apple-darwin ;;
  *) echo "install.sh: no release binary for $(uname -s) $(uname -m); build from source: cargo install --locked --git https://github.com/autotriage/autotriage" >&2; exit 2 ;;
esac
if [ "$version" = latest ]; then tag=latest; else tag="v${version#v}"; fi
base="${AUTOTRIAGE_DOWNLOAD_URL:-https://github.com/autotriage/autotriage/releases/download}"
if [ "$tag" = latest ] && [ -z "${AUTOTRIAGE_DOWNLOAD_URL:-}" ]; then
  url="https://github.com/autotriage/autotriage/releases/latest/download"
else
  url="$base/$tag"
fi
name="autotriage-$target.tar.gz"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fetch() {
  if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 3 -o "$2" "$1"
  else wget -q -O "$2" "$1"; fi
}
fetch "$url/$name" "$work/$name" || { echo "install.sh: cannot download $url/$name" >&2; exit 1; }
fetch "$url/$name.sha256" "$work/$name.sha256" || { echo "install.sh: cannot download $url/$name.sha256" >&2; exit 1; }
expected="$(cut -d' ' -f1 < "$work/$name.sha256")"
if command -v sha256sum >/dev/null 2>&1; then actual="$(sha256sum "$work/$name" | cut -d' ' -f1)"
else actual="$(shasum -a 256 "$work/$name" | cut -d' ' -f1)"; fi
if [ -z "$expected" ] || [ "$expected" != "$actual" ]; then
  echo "install.sh: checksum mismatch for $name (expected ${expected:-nothing}, got $actual); nothing was installed" >&2
  exit 1
fi
tar -xzf "$work/$name" -C "$work"
mkdir -p "$to"
# Written next to the destination, then renamed: never a half-written binary.
cp "$work/autotriage-$target/autotriage" "$to/.autotriage.new"
chmod 755 "$to/.autotriage.new"
mv "$to/.autotriage.new" "$to/autotriage"
echo "installed $("$to/autotriage" --version) to $to/autotriage"
