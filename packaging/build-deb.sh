#!/bin/sh
# Builds the Debian package from programs already built for /var/qmail:
#   sh packaging/build-deb.sh BUILD_DIR OUT_DIR   (`make deb` runs it)
# By hand with dpkg-deb: the layout is `make install`'s, so a tree staged
# here and the maintainer scripts below are all there is to it.
#
# The programs ship root:root 0755; postinst (packaging/setup.sh, the same
# script `make install` runs) gives the two privileged ones their owners and
# set-id modes, which cannot be in the archive: the account they belong to
# is made by that same postinst. Until it has run (on a first install, or
# for the moment of an upgrade) they lack their privilege and fail closed:
# local mail is refused temporarily, never passed uncounted.
set -eu
build=${1:?usage: build-deb.sh BUILD_DIR OUT_DIR}
out=${2:?usage: build-deb.sh BUILD_DIR OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$top/Cargo.toml")
arch=$(dpkg --print-architecture)
# The changelog's newest entry must be this version.
head -1 "$here/changelog" | grep -q "^overlimit ($version) " ||
  { echo "packaging/changelog: its first entry is not version $version" >&2; exit 1; }
programs=$(sed -n 's/^PROGRAMS *= *//p' "$top/Makefile")

stage="$out/overlimit_${version}_$arch"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/var/qmail/bin" "$stage/usr/share/man/man8" \
  "$stage/usr/share/doc/overlimit/examples" "$stage/lib/systemd/system"
for p in $programs; do
  install -m 755 "$build/$p" "$stage/var/qmail/bin/$p"
done
for m in "$top"/man/*.[78]; do
  mkdir -p "$stage/usr/share/man/man${m##*.}"
  gzip -9n <"$m" >"$stage/usr/share/man/man${m##*.}/$(basename "$m").gz"
done
for f in "$top"/control-examples/*; do
  install -m 644 "$f" "$stage/usr/share/doc/overlimit/examples/"
done
for u in overlimit-policy.service overlimit-sweep.service overlimit-sweep.timer; do
  install -m 644 "$top/control-examples/$u" "$stage/lib/systemd/system/$u"
done
gzip -9n <"$here/changelog" >"$stage/usr/share/doc/overlimit/changelog.gz"
{
  cat <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: overlimit

Files: *
Copyright: 2026 the overlimit developers
License: Expat
HEAD
  # The license text, each line indented, blank lines as " .".
  sed -n '/^Permission/,$p' "$top/LICENSE" | sed 's/^$/./; s/^/ /'
} >"$stage/usr/share/doc/overlimit/copyright"

# The maintainer scripts; postinst runs the setup `make install` runs,
# shipped as /usr/share/overlimit/setup.sh.
mkdir -p "$stage/usr/share/overlimit"
install -m 755 "$here/setup.sh" "$stage/usr/share/overlimit/setup.sh"
mkdir -p "$stage/usr/share/lintian/overrides"
install -m 644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/overlimit"
for script in postinst prerm postrm; do
  install -m 755 "$here/$script" "$stage/DEBIAN/$script"
done

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  "$here/control" >"$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
  sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 644 "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control"
# OVERLIMIT_DEB_COMPRESSION=none (the tests, with debug programs) skips
# the slow xz of a large archive.
dpkg-deb --root-owner-group -Z"${OVERLIMIT_DEB_COMPRESSION:-xz}" --build "$stage" "$out/overlimit_${version}_$arch.deb" >/dev/null
rm -rf "$stage"
echo "$out/overlimit_${version}_$arch.deb"
