#!/bin/sh
# Install one Debian package for a development image and give its service account uid/gid 999
# (the manifest's runAsUser), so the package's scripts and file ownership stay as Debian made them.
#   install-package.sh PACKAGE ACCOUNT [DIRECTORY...]   (directories handed to the account)
set -eu
package=$1
account=$2
shift 2
apt-get update
apt-get install --yes --no-install-recommends "$package"
rm -rf /var/lib/apt/lists/*
usermod --uid 999 "$account"
groupmod --gid 999 "$account"
for directory in "$@"; do
    chown -R "$account:$account" "$directory"
done
