#!/bin/sh
# Install the Debian packages that `make run` and `make test` need, or say which are missing.
set -eu

packages=""
command -v prometheus >/dev/null 2>&1 || packages="$packages prometheus"
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
    || packages="$packages prometheus-alertmanager"
command -v docker-compose >/dev/null 2>&1 || packages="$packages docker-compose"
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || packages="$packages python3-venv"

if [ -z "$packages" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian packages:$packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages
else
    echo "Missing Debian packages:$packages" >&2
    echo "Install them with: sudo apt-get install$packages" >&2
    echo "缺少 Debian 软件包:$packages；请运行: sudo apt-get install$packages" >&2
    exit 1
fi
