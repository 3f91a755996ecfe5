#!/bin/sh
# Install the Debian packages that `make run` (argument "run") or `make test`
# (argument "test") needs, or, when not root, say which ones are missing.
set -eu

purpose="${1:-run}"
packages=""
command -v prometheus >/dev/null 2>&1 || packages="$packages prometheus"
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
    || packages="$packages prometheus-alertmanager"
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || packages="$packages python3-venv"

if [ "$purpose" = "test" ]; then
    command -v docker-compose >/dev/null 2>&1 || packages="$packages docker-compose"
    command -v chromium >/dev/null 2>&1 || packages="$packages chromium"
    dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || packages="$packages fonts-wqy-microhei"
    # ip and sysctl set up the network namespace of the datagram ICMP test.
    command -v ip >/dev/null 2>&1 || packages="$packages iproute2"
    command -v sysctl >/dev/null 2>&1 || packages="$packages procps"
fi

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
