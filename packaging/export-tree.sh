#!/usr/bin/env bash
# export-tree.sh DEST: copy azprov's source tree into DEST for a package build.
#
# DEST gets the files git tracks, as they are in the working tree (uncommitted edits included,
# untracked files left out, deleted files skipped); outside a git checkout, everything but
# .git, dist, .venv and caches.  Files the packages need that are not committed yet are taken
# from the working tree with a warning; a missing packaging/azprov.toml becomes a placeholder
# in DEST only, so that a package always builds.  Used by build-deb.sh and build-rpm.sh.
set -euo pipefail

dest=${1:?usage: export-tree.sh DEST}
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dest"

if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    cd "$top"
    git ls-files -z |
        while IFS= read -r -d '' f; do
            if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done |
        tar --null --no-recursion -T - -cf - |
        tar -xf - -C "$dest"
else
    tar -C "$top" --exclude=./.git --exclude=./dist --exclude=./.venv --exclude='__pycache__' \
        --exclude='*.egg-info' --exclude=./build -cf - . | tar -xf - -C "$dest"
fi

for f in packaging/azprov.toml systemd/azprov.service systemd/azprov-hostname.service systemd/azprov-firewall.service systemd/80-azprov.preset docs/azprov.8; do
    [ -e "$dest/$f" ] && continue
    mkdir -p "$(dirname "$dest/$f")"
    if [ -e "$top/$f" ]; then
        echo "export-tree: warning: $f is not committed; using the working-tree copy" >&2
        cp -a "$top/$f" "$dest/$f"
    elif [ "$f" = packaging/azprov.toml ]; then
        echo "export-tree: warning: $f does not exist; using a placeholder" >&2
        printf '# azprov configuration: see azprov(8).  Every key has a built-in default.\n' >"$dest/$f"
    else
        echo "export-tree: $f is missing" >&2
        exit 1
    fi
done
