#!/usr/bin/env bash
# Regenerates hsmkms.db.gz and hsmkms-grants.db.gz in this directory with
# the store code of the last commit that wrote schema 1 (no schema record):
# gen/main.go is run inside a temporary worktree at that commit, so the
# files are what that release wrote, whatever the current code does. The
# output is deterministic: run it and `git diff` shows nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
schema1_commit=d7dbd2b61340a1415a39b9deab0c80b5aa7ce83e
wt=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"' EXIT
git -C "$here" worktree add --detach "$wt" "$schema1_commit" >/dev/null
mkdir -p "$wt/schema1gen"
cp "$here/gen/main.go" "$wt/schema1gen/main.go"
(cd "$wt" && go run ./schema1gen "$here")
echo "wrote $here/hsmkms.db.gz and $here/hsmkms-grants.db.gz (schema 1, commit ${schema1_commit:0:7})"
