#!/usr/bin/env bash
# Builds the azprov noarch .rpm into dist/ (what "make rpm" runs), with plain rpmbuild (on
# Debian: the "rpm" package).  Source0 is made from the source tree by export-tree.sh (tracked
# files as they are in the working tree); the version comes from azprov/__init__.py.
#
# Environment: AZPROV_DIST (output directory, default dist/ at the top of the tree),
# AZPROV_KEEP_BUILD=1 (keep the temporary rpmbuild tree and print where it is).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dist=${AZPROV_DIST:-$top/dist}
clean_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" LC_ALL=C.UTF-8)

if ! "${clean_env[@]}" sh -c 'command -v rpmbuild' >/dev/null; then
    echo "build-rpm: rpmbuild is missing (Debian package \"rpm\", listed in .ci/apt-packages)" >&2
    exit 1
fi

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$top/azprov/__init__.py")
case "$version" in
    "") echo "build-rpm: cannot read __version__ from azprov/__init__.py" >&2; exit 1 ;;
    *-*) echo "build-rpm: version $version contains '-', which rpm does not allow" >&2; exit 1 ;;
esac

work=$(mktemp -d /tmp/azprov-rpm.XXXXXX)
if [ "${AZPROV_KEEP_BUILD:-}" = 1 ]; then
    echo "build-rpm: build tree kept in $work"
else
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}

"$top/packaging/export-tree.sh" "$work/azprov-$version"
tar -C "$work" --owner=0 --group=0 --numeric-owner -czf "$work/SOURCES/azprov-$version.tar.gz" \
    "azprov-$version"
cp "$top/packaging/rpm/azprov.spec" "$work/SPECS/"

# --nodeps: the build host's rpm database is empty (Debian); the spec has no BuildRequires.
"${clean_env[@]}" rpmbuild -bb --nodeps \
    --define "_topdir $work" \
    --define "azprov_version $version" \
    "$work/SPECS/azprov.spec"

mkdir -p "$dist"
rm -f "$dist"/azprov-*.noarch.rpm
cp "$work"/RPMS/noarch/azprov-"$version"-*.noarch.rpm "$dist"/
ls "$dist"/azprov-"$version"-*.noarch.rpm | sed 's/^/build-rpm: /'
