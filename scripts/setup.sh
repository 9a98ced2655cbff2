#!/usr/bin/env bash
# Set-up: installs the Debian packages gridmeter needs (only those missing) and fetches the
# Apache Kafka broker from Maven Central into .cache/kafka/lib. Idempotent: a second run
# on a ready machine changes nothing and takes about a second.
#
#   bash scripts/setup.sh            # everything
#   GM_SETUP_SKIP_KAFKA=1 ...        # packages only
set -euo pipefail
mkdir -p "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

# Build, test and service packages (Debian 12 names). postgresql-15 gives the server
# binaries; the project runs its own cluster with them (scripts/services.sh). It also ships
# the postgres_fdw extension that `gridmeter shard coordinator` uses (docs/scaling.md): no
# separate contrib package on Debian 12.
packages=(
    build-essential cmake pkg-config git ca-certificates
    librdkafka-dev libpq-dev libmicrohttpd-dev libcjson-dev check
    # OpenSSL libcrypto (hashes, HMAC, random bytes) and libcurl (all outgoing HTTP: the API's
    # rater-metrics relay, the node agent's tests and benchmark)
    libssl-dev libcurl4-openssl-dev
    postgresql-15 postgresql-client-15
    openjdk-17-jre-headless maven
    clang clang-format libclang-rt-14-dev
    curl procps iproute2 netcat-openbsd python3
    # the API's HTTPS test (a throw-away certificate, a request over TLS) and the event schema
    # test (docs/event.schema.json, with Debian's python3)
    openssl python3-jsonschema
    # the dashboard's browser test (tests/e2e): Chromium, Node.js and npm (a NodeSource nodejs
    # ships its own npm and conflicts with Debian's npm package: ask for npm only without one)
    chromium nodejs $(command -v npm >/dev/null || echo npm)
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    gm_say "installing ${#missing[@]} Debian packages: ${missing[*]}"
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || gm_die "not root and no sudo: install these packages: ${missing[*]}"
        sudo_cmd=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Debian's postgresql-common would create and start a system cluster on 5432; we run
    # our own cluster, so keep the package from creating one where none exists yet.
    if [ ! -d /etc/postgresql ] && [ ! -f /etc/postgresql-common/createcluster.conf ]; then
        "${sudo_cmd[@]}" mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" | "${sudo_cmd[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    t0=$SECONDS
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$repo/.cache/apt.log" 2>&1 \
        || { tail -n 30 "$repo/.cache/apt.log" >&2; gm_die "apt-get install failed (log: $repo/.cache/apt.log)"; }
    gm_say "packages installed in $((SECONDS - t0)) s"
else
    gm_say "Debian packages: all ${#packages[@]} present"
fi

if [ "${GM_SETUP_SKIP_KAFKA:-0}" != 1 ]; then
    gm_fetch_kafka
fi
gm_say "set-up done"
