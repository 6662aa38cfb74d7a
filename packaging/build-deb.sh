#!/usr/bin/env bash
# Builds the azprov .deb into dist/ (what "make deb" runs).
#
# The build tree is a temporary copy of the files git tracks, as they are in the working tree
# (uncommitted edits included, untracked files left out: see export-tree.sh), with
# packaging/debian as debian/.
# The build runs with a clean environment so that Debian's /usr/bin/python3 and its modules are
# used, never a pyenv or virtualenv interpreter found on PATH.
#
# Environment: AZPROV_DIST (output directory, default dist/ at the top of the tree),
# AZPROV_KEEP_BUILD=1 (keep the temporary build tree and print where it is).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dist=${AZPROV_DIST:-$top/dist}
clean_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" LC_ALL=C.UTF-8)

for tool in dpkg-buildpackage dh python3; do
    if ! "${clean_env[@]}" sh -c "command -v $tool" >/dev/null; then
        echo "build-deb: $tool is missing (install the build packages listed in .ci/apt-packages)" >&2
        exit 1
    fi
done

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$top/azprov/__init__.py")
if [ -z "$version" ]; then
    echo "build-deb: cannot read __version__ from azprov/__init__.py" >&2
    exit 1
fi

work=$(mktemp -d /tmp/azprov-deb.XXXXXX)
if [ "${AZPROV_KEEP_BUILD:-}" = 1 ]; then
    echo "build-deb: build tree kept in $work"
else
    trap 'rm -rf "$work"' EXIT
fi
src=$work/azprov-$version
mkdir -p "$src"

"$top/packaging/export-tree.sh" "$src"
rm -rf "$src/debian"
cp -a "$top/packaging/debian" "$src/debian"

# The package version follows azprov.__version__: when debian/changelog lags behind, this
# build gets a generated entry (the committed changelog is not touched).
changelog_version=$(cd "$src" && dpkg-parsechangelog -S Version)
if [ "$changelog_version" != "$version" ]; then
    echo "build-deb: warning: debian/changelog is at $changelog_version, azprov at $version;" \
         "adding a changelog entry for this build" >&2
    {
        printf 'azprov (%s) unstable; urgency=medium\n\n' "$version"
        printf '  * Built from the source tree at version %s.\n\n' "$version"
        printf ' -- %s  %s\n\n' "$(sed -n 's/^Maintainer: //p' "$src/debian/control")" "$(date -R)"
        cat "$src/debian/changelog"
    } >"$src/debian/changelog.new"
    mv "$src/debian/changelog.new" "$src/debian/changelog"
fi

(cd "$src" && "${clean_env[@]}" dpkg-buildpackage -us -uc -b)

mkdir -p "$dist"
rm -f "$dist"/azprov_*_all.deb
cp "$work"/azprov_"$version"_all.deb "$dist"/
echo "build-deb: $dist/azprov_${version}_all.deb"
