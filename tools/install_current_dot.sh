#!/usr/bin/env bash
# Unpack a current Graphviz (Debian unstable's packages) into PREFIX beside the
# system's, without installing anything system-wide, and write PREFIX/bin/dot, a
# wrapper that runs it.  Then draw with it:
#
#     bash tools/install_current_dot.sh /opt/graphviz-new
#     GRAPHENGINE_DOT=/opt/graphviz-new/bin/dot graphengine render m.pb -o m.svg
#     GRAPHENGINE_DOT=/opt/graphviz-new/bin/dot python -m pytest tests/test_render_gallery.py
#
# Debian 12 ships Graphviz 2.43; unstable's current Graphviz needs a newer glibc
# than Debian 12's 2.36, so unstable's glibc is unpacked too and the wrapper runs
# dot through that glibc's loader.  The system's cairo, pango and gd (which only
# need an older glibc) are used as they are.  apt reads a private copy of its
# state under PREFIX/apt, so the system's package lists stay as they were.
# Needs a Debian (or derivative) system with graphviz's runtime libraries installed
# (apt-get install graphviz) and the network access apt already has.
set -euo pipefail
PREFIX=${1:-/opt/graphviz-new}
ARCH=$(dpkg --print-architecture)
TRIPLET=$(gcc -dumpmachine 2>/dev/null || echo "$(uname -m)-linux-gnu")
# The mirror the system already uses for Debian's main archive.
MIRROR=$(grep -rhoE '^(URIs: |deb )[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | head -1 | sed -E 's/^(URIs: |deb )//; s/ *$//' || true)
if [ -z "$MIRROR" ]; then
    echo "no Debian mirror found in /etc/apt/sources.list*" >&2
    exit 1
fi
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
APT="$PREFIX/apt"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$PREFIX/bin"
echo "deb [signed-by=$KEYRING] $MIRROR unstable main" >"$APT/sources.list"
OPTS=(-o "Dir::Etc::sourcelist=$APT/sources.list" -o Dir::Etc::sourceparts=/nonexistent
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o "APT::Architecture=$ARCH"
    -o APT::Sandbox::User=root)
apt-get "${OPTS[@]}" -qq update
# dot and the Graphviz libraries it loads (their names carry the soname, so take
# them from the package's own dependencies), and the glibc they were built for.
PACKAGES=$(apt-cache "${OPTS[@]}" depends graphviz libgvc7 2>/dev/null \
    | awk '/Depends: (lib(cdt|cgraph|gvc|gvpr|pathplan|xdot|gvplugin-(gd|pango))[0-9a-z-]*)$/ {print $2}' \
    | sort -u)
cd "$APT/cache/archives"
apt-get "${OPTS[@]}" -qq download graphviz libc6 $PACKAGES
for deb in ./*.deb; do
    dpkg-deb -x "$deb" "$PREFIX"
done
LIB="$PREFIX/usr/lib/$TRIPLET"
LOADER=$(ls "$LIB"/ld-linux*.so.* | head -1)
cat >"$PREFIX/bin/dot" <<EOF
#!/bin/sh
# Graphviz from Debian unstable, run through unstable's glibc (see tools/install_current_dot.sh).
export GVBINDIR="$LIB/graphviz"
exec "$LOADER" --library-path "$LIB:/lib/$TRIPLET:/usr/lib/$TRIPLET" "$PREFIX/usr/bin/dot" "\$@"
EOF
chmod +x "$PREFIX/bin/dot"
"$PREFIX/bin/dot" -c # register the plugins (writes $LIB/graphviz/config*)
"$PREFIX/bin/dot" -V
